"""The download script, offline: archives built in tmp_path, served from 127.0.0.1 or file://."""
import gzip
import io
import json
import os
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from domainbed import datasets
from domainbed.datasets.download import fetch, install, verify
from domainbed.scripts import download
import support

PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]


# ---------------------------------------------------------------------------------------
# A tiny HTTP server with Range support, shut down after each test

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if self.path in server.pages:
            return self._send(200, server.pages[self.path], "text/html; charset=utf-8")
        if self.path not in server.files:
            return self._send(404, b"not found", "text/plain")
        body = server.files[self.path]
        ranged = self.headers.get("Range")
        if ranged and not server.ignore_range:
            start = int(ranged.split("=")[1].split("-")[0])
            if start >= len(body):
                return self._send(416, b"", "text/plain")
            extra = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            return self._send(206, body[start:], "application/octet-stream", extra)
        self._send(200, body, "application/octet-stream")

    def _send(self, code, body, content_type, extra=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.pages, httpd.requests, httpd.ignore_range = {}, {}, [], False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _fetch(sources, dest, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("retry_wait", 0.0)
    kwargs.setdefault("timeout", 5)
    return fetch.download_file(sources, str(dest), **kwargs)


PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


# ---------------------------------------------------------------------------------------
# Transfers and checksums

def test_download_records_size_and_md5(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    store = fetch.ChecksumStore(str(tmp_path))
    _fetch([server.url + "/a.bin"], tmp_path / "downloads" / "a.bin", store=store)
    assert (tmp_path / "downloads" / "a.bin").read_bytes() == PAYLOAD
    recorded = json.loads((tmp_path / ".checksums.json").read_text())["archives"]["a.bin"]
    assert recorded["size"] == len(PAYLOAD)
    assert recorded["md5"] == fetch.md5_of(tmp_path / "downloads" / "a.bin")
    assert not (tmp_path / "downloads" / "a.bin.part").exists()


def test_truncated_part_is_completed_with_range(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:3000])
    _fetch([server.url + "/a.bin"], tmp_path / "a.bin")
    assert server.requests == [("/a.bin", "bytes=3000-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_accepted(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    _fetch([server.url + "/a.bin"], tmp_path / "a.bin", md5=fetch.md5_of(tmp_path / "a.bin.part"))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:3000])
    _fetch([server.url + "/a.bin"], tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD  # not the first 3000 bytes twice


def test_known_md5_mismatch_is_detected_and_nothing_kept(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    with pytest.raises(fetch.ChecksumError, match="expected 0{32}"):
        _fetch([server.url + "/a.bin"], tmp_path / "a.bin", md5="0" * 32)
    assert os.listdir(tmp_path) == []


def test_recorded_md5_mismatch_is_detected(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    store = fetch.ChecksumStore(str(tmp_path))
    _fetch([server.url + "/a.bin"], tmp_path / "a.bin", store=store)
    os.remove(tmp_path / "a.bin")
    server.files["/a.bin"] = PAYLOAD[::-1]  # the host now serves another file
    with pytest.raises(fetch.ChecksumError, match="recorded in"):
        _fetch([server.url + "/a.bin"], tmp_path / "a.bin", store=fetch.ChecksumStore(str(tmp_path)))


def test_mirrors_are_tried_in_order(server, tmp_path):
    server.files["/mirror2/a.bin"] = PAYLOAD
    _fetch([server.url + "/gone/a.bin", server.url + "/mirror2/a.bin"], tmp_path / "a.bin")
    assert [path for path, _ in server.requests] == ["/gone/a.bin", "/mirror2/a.bin"]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_all_sources_failing_is_one_clear_error(server, tmp_path):
    with pytest.raises(fetch.DownloadError, match="could not download a.bin: .*HTTP 404"):
        _fetch([server.url + "/nothing"], tmp_path / "a.bin")


def test_file_url_source_resumes(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    (tmp_path / "copy.bin.part").write_bytes(PAYLOAD[:100])
    _fetch([source.as_uri()], tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == PAYLOAD


def test_google_drive_confirmation_form_is_followed(server, tmp_path):
    server.files["/download?id=XYZ&export=download&confirm=t&uuid=1"] = PAYLOAD
    server.pages["/uc"] = (
        b'<html><form id="download-form" action="/download" method="get">'
        b'<input type="hidden" name="id" value="XYZ"><input type="hidden" name="export" value="download">'
        b'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="1">'
        b'</form></html>')
    server.pages["/plain"] = b"<html>quota exceeded</html>"
    _fetch([server.url + "/uc"], tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    with pytest.raises(fetch.DownloadError, match="web page instead of a file"):
        _fetch([server.url + "/plain"], tmp_path / "b.bin")


# ---------------------------------------------------------------------------------------
# Extraction

def _png_bytes():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def _tar_gz(path, members):
    with tarfile.open(path, "w:gz") as tarred:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
    return path


def test_extract_zip_tar_and_gz(tmp_path):
    fetch.extract(str(_zip(tmp_path / "a.zip", {"top/x.txt": b"zip"})), str(tmp_path / "out"))
    fetch.extract(str(_tar_gz(tmp_path / "b.tar.gz", {"top/y.txt": b"tar"})), str(tmp_path / "out"))
    (tmp_path / "c.bin.gz").write_bytes(gzip.compress(b"gz"))
    fetch.extract(str(tmp_path / "c.bin.gz"), str(tmp_path / "out"))
    assert (tmp_path / "out" / "top" / "x.txt").read_bytes() == b"zip"
    assert (tmp_path / "out" / "top" / "y.txt").read_bytes() == b"tar"
    assert (tmp_path / "out" / "c.bin").read_bytes() == b"gz"


def test_extract_refuses_paths_outside_the_destination(tmp_path):
    evil = _zip(tmp_path / "evil.zip", {"../escaped.txt": b"x"})
    with pytest.raises(fetch.DownloadError, match="outside"):
        fetch.extract(str(evil), str(tmp_path / "out"))
    assert not (tmp_path / "escaped.txt").exists()


# ---------------------------------------------------------------------------------------
# The command line: PACS from a local archive, verify, errors

def _fake_pacs_zip(path, top="kfold", n_images=2):
    png = _png_bytes()
    members = {f"{top}/{domain}/{cls}/{k}.png": png
               for domain in PACS_DOMAINS for cls in ("dog", "horse") for k in range(n_images)}
    return _zip(path, members)


@pytest.fixture
def small_pacs(monkeypatch):
    """PACS expectations shrunk to the fake archive: 4 domains x 2 classes x 2 images."""
    pacs = datasets.get_dataset_class("PACS")
    monkeypatch.setattr(pacs, "EXPECTED_CLASSES", 2)
    monkeypatch.setattr(pacs, "EXPECTED_IMAGES", 16)
    return pacs


def _main(*args):
    return download.main([str(a) for a in args] + ["--no_progress"])


def test_pacs_download_extract_layout_and_verify(tmp_path, small_pacs, capsys):
    archive = _fake_pacs_zip(tmp_path / "PACS.zip")
    data = tmp_path / "data"
    assert _main("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={archive}") == 0
    assert sorted(os.listdir(data / "PACS")) == PACS_DOMAINS
    assert sorted(os.listdir(data / "PACS" / "photo" / "horse")) == ["0.png", "1.png"]
    assert sorted(os.listdir(data)) == [".checksums.json", "PACS", "downloads"]
    assert os.listdir(data / "downloads") == []  # archive removed after unpacking
    record = json.loads((data / ".checksums.json").read_text())
    assert record["archives"]["PACS.zip"]["md5"] == fetch.md5_of(archive)
    assert record["datasets"]["PACS"] == {"classes": 2, "images": 16}
    dataset = small_pacs(str(data), [], {"data_augmentation": False})
    assert dataset.num_classes == 2 and [len(env) for env in dataset] == [4, 4, 4, 4]

    capsys.readouterr()
    assert _main("--data_dir", data, "--verify", "--datasets", "PACS") == 0
    assert capsys.readouterr().out.startswith("PACS: OK")
    os.remove(data / "PACS" / "cartoon" / "dog" / "0.png")
    assert _main("--data_dir", data, "--verify", "--datasets", "PACS") == 1
    assert "PACS: PROBLEM: 15 images, expected 16" in capsys.readouterr().out


def test_existing_dataset_is_kept_unless_forced(tmp_path, small_pacs, capsys):
    archive = _fake_pacs_zip(tmp_path / "PACS.zip")
    data = tmp_path / "data"
    args = ("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={archive}")
    assert _main(*args) == 0
    capsys.readouterr()
    assert _main(*args) == 0
    assert "already in" in capsys.readouterr().out
    os.remove(data / "PACS" / "cartoon" / "dog" / "0.png")
    assert _main(*args) == 2
    assert "--force" in capsys.readouterr().err
    assert _main(*args, "--force") == 0
    assert (data / "PACS" / "cartoon" / "dog" / "0.png").exists()


def test_wrong_archive_leaves_no_partial_dataset(tmp_path, small_pacs, capsys):
    archive = _zip(tmp_path / "PACS.zip", {"other/thing.txt": b"not PACS"})
    data = tmp_path / "data"
    assert _main("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={archive}",
                 "--keep_archives") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "unpacking" not in line]
    assert len(err) == 1 and err[0].startswith("PACS: FAILED: the archive does not contain")
    assert "--source" in err[0]
    assert sorted(os.listdir(data)) == ["downloads"]  # no PACS/, no staging, no checksum kept


def test_unknown_dataset_is_a_one_line_did_you_mean(tmp_path, capsys):
    assert _main("--data_dir", tmp_path, "--datasets", "PAC") == 2
    err = capsys.readouterr().err.strip()
    assert "Did you mean 'PACS'?" in err and "\n" not in err
    assert not os.listdir(tmp_path)


def test_bad_source_option_is_a_usage_error(tmp_path, capsys):
    assert _main("--data_dir", tmp_path, "--datasets", "PACS", "--source", "PACS.zip") == 2
    assert "ARCHIVE=URL_OR_PATH" in capsys.readouterr().err


def test_offline_datasets_need_no_download(tmp_path, capsys):
    assert _main("--data_dir", tmp_path, "--datasets", "DigitsDG5k", "--verify") == 0
    assert "DigitsDG5k: needs no download" in capsys.readouterr().out


def test_verify_without_names_skips_absent_datasets(tmp_path, capsys):
    assert _main("--data_dir", tmp_path, "--verify") == 0
    out = capsys.readouterr().out
    assert "PACS: not downloaded" in out and "MNIST: not downloaded" in out
    assert _main("--data_dir", tmp_path, "--verify", "--datasets", "VLCS") == 1


def test_verify_mnist_file_sizes(tmp_path, capsys):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, size in verify.MNIST_RAW_SIZES.items():
        with open(raw / name, "wb") as f:
            f.truncate(size)  # sparse: the size is what is checked
    assert _main("--data_dir", tmp_path, "--verify", "--datasets", "RotatedMNIST") == 0
    with open(raw / "t10k-labels-idx1-ubyte", "wb") as f:
        f.truncate(100)
    assert _main("--data_dir", tmp_path, "--verify", "--datasets", "MNIST") == 1
    assert "t10k-labels-idx1-ubyte has 100 bytes, expected 10008" in capsys.readouterr().out


def test_verify_flags_class_lists_that_differ_between_domains(tmp_path, small_pacs):
    for domain in PACS_DOMAINS:
        for cls in (["dog", "horse"] if domain != "photo" else ["dog", "zebra"]):
            folder = tmp_path / "PACS" / domain / cls
            folder.mkdir(parents=True)
            for k in range(2):
                (folder / f"{k}.jpg").write_bytes(b"x")
    problems, _ = verify.check_image_folder(str(tmp_path), small_pacs)
    assert any("photo's classes differ from art_painting's" in p for p in problems)


# ---------------------------------------------------------------------------------------
# TerraIncognita: rebuilt from Caltech Camera Traps annotations

def _cct_annotations(locations=("38", "43", "46", "100")):
    categories = [{"id": 1, "name": "bobcat"}, {"id": 2, "name": "car"}, {"id": 3, "name": "empty"}]
    images, annotations = [], []
    for loc in locations:
        for category in (1, 3):
            image_id = f"{loc}-{category}"
            images.append({"id": image_id, "file_name": f"{image_id}.jpg", "location": int(loc)})
            annotations.append({"id": f"a{image_id}", "image_id": image_id, "category_id": category})
    images.append({"id": "car", "file_name": "car.jpg", "location": 38})        # excluded category
    annotations.append({"id": "acar", "image_id": "car", "category_id": 2})
    images.append({"id": "far", "file_name": "far.jpg", "location": 7})         # excluded location
    annotations.append({"id": "afar", "image_id": "far", "category_id": 1})
    annotations.append({"id": "twice", "image_id": "38-1", "category_id": 3})   # two categories
    return {"images": images, "annotations": annotations, "categories": categories}


def test_rebuild_terra_incognita_from_annotations(tmp_path):
    annotations = _cct_annotations()
    images_root = tmp_path / "images"
    images_root.mkdir()
    for image in annotations["images"]:
        if image["id"] != "100-3":  # one annotated image missing from the archive
            (images_root / image["file_name"]).write_bytes(image["id"].encode())
    copied, missing = install.rebuild_terra_incognita(annotations, str(images_root), str(tmp_path / "out"))
    assert (copied, missing) == (8, 1)
    locations = ["location_100", "location_38", "location_43", "location_46"]
    assert sorted(os.listdir(tmp_path / "out")) == locations
    assert sorted(os.listdir(tmp_path / "out" / "location_38" / "empty")) == ["38-1.jpg", "38-3.jpg"]
    assert os.listdir(tmp_path / "out" / "location_38" / "bobcat") == ["38-1.jpg"]
    assert not (tmp_path / "out" / "location_100" / "empty").exists()


def test_terra_incognita_end_to_end_from_two_archives(tmp_path, monkeypatch, capsys):
    terra = datasets.get_dataset_class("TerraIncognita")
    monkeypatch.setattr(terra, "EXPECTED_CLASSES", 2)
    monkeypatch.setattr(terra, "EXPECTED_IMAGES", 9)
    annotations = _cct_annotations()
    images = _tar_gz(tmp_path / "images.tar.gz", {
        f"eccv_18_all_images_sm/{im['file_name']}": _png_bytes() for im in annotations["images"]})
    labels = _zip(tmp_path / "labels.zip", {"caltech_images_20210113.json": json.dumps(annotations)})
    data = tmp_path / "data"
    code = _main("--data_dir", data, "--datasets", "TerraIncognita",
                 "--source", f"eccv_18_all_images_sm.tar.gz={images.as_uri()}",
                 "--source", f"caltech_camera_traps.json.zip={labels}")
    assert code == 0, capsys.readouterr()
    dataset = terra(str(data), [], {"data_augmentation": False})
    assert dataset.num_classes == 2 and [len(env) for env in dataset] == [2, 3, 2, 2]
    assert not [name for name in os.listdir(data) if name.startswith(".staging")]


# ---------------------------------------------------------------------------------------
# Issue 12, case 1: extraction never writes outside the destination, with or without
# tarfile's `data` filter (absent from Python 3.10.0-3.10.11 and 3.11.0-3.11.3)

def _tar(path, entries):
    """entries: (name, kind, payload) with kind in file/dir/sym/hard/fifo/chr."""
    with tarfile.open(path, "w") as tarred:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "file":
                data = payload
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tarred.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture(params=["with data filter", "without data filter"])
def filter_availability(request, monkeypatch):
    if request.param == "without data filter" and hasattr(tarfile, "data_filter"):
        monkeypatch.delattr(tarfile, "data_filter")
    return request.param


def _outside_snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in root.rglob("*") if "dest" not in p.relative_to(root).parts}


EVIL_TARS = {
    "symlink chain": [("d1/d2/a", "sym", "../.."), ("d1/d2/b", "sym", "a/../../victim"),
                      ("d1/d2/b/secret.txt", "file", b"overwritten")],
    "hard link outside": [("h", "hard", "../../victim/secret.txt"), ("h", "file", b"overwritten")],
    "hard link from a subfolder": [("a/b/h", "hard", "../../victim/secret.txt"),   # root-relative
                                   ("a/b/h", "file", b"overwritten")],
    "hard link to a link": [("l", "sym", "."), ("h", "hard", "l")],
    "absolute name": [("/tmp/abs.txt", "file", b"x")],
    "dotdot name": [("a/../../escaped.txt", "file", b"x")],
    "absolute link": [("l", "sym", "/etc")],
    "link out": [("l", "sym", "../victim")],
    "write through a link": [("l", "sym", "."), ("l2", "sym", "l/../.."), ("l2/x", "file", b"x")],
    "link redirected later": [("d/x", "sym", "y/.."), ("d/y", "sym", "..")],
    "fifo": [("pipe", "fifo", None)],
    "device": [("null", "chr", None)],
}


@pytest.mark.parametrize("case", list(EVIL_TARS))
def test_evil_tar_is_refused_and_nothing_outside_changes(tmp_path, filter_availability, case):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret.txt").write_bytes(b"secret")
    archive = _tar(tmp_path / "evil.tar", EVIL_TARS[case])
    before = _outside_snapshot(tmp_path)
    dest = tmp_path / "dest" / "staging"
    with pytest.raises(fetch.UnsafeArchiveError, match="outside|special|hard link"):
        fetch.extract(str(archive), str(dest))
    assert _outside_snapshot(tmp_path) == before
    assert (victim / "secret.txt").read_bytes() == b"secret"
    for path in dest.rglob("*"):   # no link left that leads out
        if path.is_symlink():
            assert os.path.realpath(path).startswith(os.path.realpath(dest))


def test_safe_links_and_hard_links_are_extracted(tmp_path, filter_availability):
    archive = _tar(tmp_path / "ok.tar", [
        ("top/", "dir", None), ("top/a.txt", "file", b"a"), ("top/link", "sym", "a.txt"),
        ("top/sub/up", "sym", ".."), ("top/hard", "hard", "top/a.txt"),
        ("./top/b.txt", "file", b"b")])
    fetch.extract(str(archive), str(tmp_path / "dest"))
    top = tmp_path / "dest" / "top"
    assert (top / "link").read_bytes() == b"a" and (top / "hard").read_bytes() == b"a"
    assert (top / "b.txt").read_bytes() == b"b"
    assert os.path.realpath(top / "sub" / "up") == os.path.realpath(top)


@pytest.mark.parametrize("content, name", [
    (lambda tmp: (tmp / "x.tar.gz").read_bytes()[:40], "cut.tar.gz"),
    (lambda tmp: os.urandom(2000), "noise.zip"),
    (lambda tmp: b"PK\x03\x04" + os.urandom(100), "fake.zip"),
])
def test_damaged_archives_are_a_bad_archive_error(tmp_path, content, name):
    _tar_gz(tmp_path / "x.tar.gz", {"a/b.txt": os.urandom(5000)})
    (tmp_path / name).write_bytes(content(tmp_path))
    with pytest.raises(fetch.BadArchiveError):
        fetch.extract(str(tmp_path / name), str(tmp_path / "dest"))


def test_refused_archive_through_the_cli_is_one_line_exit_2(tmp_path, small_pacs, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    archive = _tar(tmp_path / "PACS.tar", EVIL_TARS["symlink chain"])
    data = tmp_path / "data"
    before = _outside_snapshot(tmp_path)
    code = _main("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={archive}")
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "unpacking" not in line]
    assert len(err) == 1 and err[0].startswith("PACS: FAILED: link 'd1/d2/b'")
    assert "outside" in err[0] and "--source" in err[0]
    assert not list(victim.iterdir())
    assert sorted(os.listdir(data)) == ["downloads"] and not os.listdir(data / "downloads")
    assert {k: v for k, v in _outside_snapshot(tmp_path).items()
            if not k.startswith("data")} == before


# ---------------------------------------------------------------------------------------
# Issue 12, case 8: data_dir, .checksums.json, a bad first archive

def test_unwritable_data_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert _main("--data_dir", tmp_path / "a_file" / "data", "--datasets", "PACS") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a writable directory" in err[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_data_dir_is_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o500)
    try:
        assert _main("--data_dir", data, "--datasets", "PACS") == 2
    finally:
        data.chmod(0o700)
    assert "is not a writable directory" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"archives": [1]}',
                                     b'{"archives": {"a.zip": {"size": 3}}}', b"\xff\xfe"])
@pytest.mark.parametrize("verify", [False, True])
def test_damaged_checksum_record_is_one_line_and_kept(tmp_path, capsys, content, verify):
    (tmp_path / ".checksums.json").write_bytes(content)
    args = ["--data_dir", tmp_path, "--datasets", "PACS"] + (["--verify"] if verify else [])
    assert _main(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ".checksums.json is damaged" in err[0] and "move it away" in err[0]
    assert (tmp_path / ".checksums.json").read_bytes() == content


def test_a_bad_first_archive_does_not_block_the_right_one(tmp_path, small_pacs, capsys):
    data = tmp_path / "data"
    wrong = _zip(tmp_path / "wrong.zip", {"other/thing.txt": b"not PACS"})
    assert _main("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={wrong}") == 2
    assert "--source" in capsys.readouterr().err
    assert not (data / ".checksums.json").exists()   # a wrong file is never trusted
    right = _fake_pacs_zip(tmp_path / "PACS.zip")
    assert _main("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={right}") == 0
    record = json.loads((data / ".checksums.json").read_text())["archives"]["PACS.zip"]
    assert record["md5"] == fetch.md5_of(right)


def test_recorded_checksum_advice_works(tmp_path, small_pacs, capsys):
    data = tmp_path / "data"
    first = _fake_pacs_zip(tmp_path / "first.zip")
    assert _main("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={first}") == 0
    shutil.rmtree(data / "PACS")
    updated = _fake_pacs_zip(tmp_path / "updated.zip", top="renamed")   # another md5
    args = ("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={updated}")
    assert _main(*args) == 2
    err = capsys.readouterr().err
    assert "recorded in" in err and "rerun with --force" in err
    assert _main(*args, "--force") == 0                                # the advice works
    record = json.loads((data / ".checksums.json").read_text())["archives"]["PACS.zip"]
    assert record["md5"] == fetch.md5_of(updated)


def test_download_usage_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "domainbed.scripts.download", "--timeout",
                             "soon", "--data_dir", str(tmp_path)], capture_output=True, text=True,
                            cwd=str(support.REPO_ROOT))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--timeout" in result.stderr


def test_verify_reports_an_unreadable_layout_as_a_problem(tmp_path, small_pacs, capsys,
                                                          monkeypatch):
    (tmp_path / "PACS").mkdir()

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "PACS"))
    monkeypatch.setattr(verify, "check_image_folder", unreadable)
    assert _main("--data_dir", tmp_path, "--verify", "--datasets", "PACS") == 1
    assert "PACS: PROBLEM: cannot read" in capsys.readouterr().out


@pytest.mark.parametrize("entries, link", [
    ([("l", "sym", "nothere"), ("l/x", "file", b"x")], "'l' -> 'nothere'"),       # dangling
    ([("d", "dir", None), ("l", "sym", "d"), ("l/x", "file", b"x")], "'l' -> 'd'"),
    ([("l", "sym", "nothere"), ("l/sub", "dir", None)], "'l' -> 'nothere'"),
])
def test_member_through_a_link_is_named(tmp_path, small_pacs, capsys, entries, link):
    # It used to be "File exists (...); free some space or fix the permissions" (exit 1).
    archive = _tar(tmp_path / "PACS.tar", entries)
    data = tmp_path / "data"
    code = _main("--data_dir", data, "--datasets", "PACS", "--source", f"PACS.zip={archive}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len([line for line in err if "FAILED" in line]) == 1
    assert "goes through the link" in err[-1] and link in err[-1], err[-1]
    assert "free some space" not in err[-1]
    assert not (data / "PACS").exists()
