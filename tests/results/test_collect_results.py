"""collect_results: upstream's printer fixtures, the byte-for-byte ground truth, and ours."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from domainbed.lib import reporting
from domainbed.scripts import collect_results
import support

REPO_ROOT = str(support.REPO_ROOT)


def run_collect(*args, cwd=REPO_ROOT):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "domainbed.scripts.collect_results", *args],
                          cwd=cwd, env=env, capture_output=True, text=True)


# ---------------------------------------------------------------------------------------
# Synthetic sweeps

def make_record(dataset, algorithm, test_envs, trial_seed=0, hparams_seed=0, step=0,
                n_envs=3, acc=0.5, **extra_args):
    args = {"dataset": dataset, "algorithm": algorithm, "test_envs": test_envs,
            "trial_seed": trial_seed, "hparams_seed": hparams_seed, "holdout_fraction": 0.2,
            "steps": None, "output_dir": "x", **extra_args}
    record = {"args": args, "hparams": {}, "step": step}
    for env in range(n_envs):
        record[f"env{env}_in_acc"] = acc + 0.01 * env
        record[f"env{env}_out_acc"] = acc + 0.02 * env
    return record


def write_job(root, name, records, done=True, extra_lines=()):
    job_dir = os.path.join(root, name)
    os.makedirs(job_dir)
    with open(os.path.join(job_dir, "results.jsonl"), "w") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        for line in extra_lines:
            f.write(line)
    if done:
        with open(os.path.join(job_dir, "done"), "w") as f:
            f.write("done")
    return job_dir


def debug_sweep(root, algorithms=("ERM",), trials=(0, 1), incomplete_acc=None):
    """Debug28 (3 envs): every single and pair test-env job, 2 checkpoints each."""
    combos = [[0], [0, 1], [0, 2], [1], [1, 2], [2]]
    for algorithm in algorithms:
        for trial in trials:
            for i, envs in enumerate(combos):
                acc = 0.5 + 0.1 * trial + 0.05 * len(algorithm)
                records = [make_record("Debug28", algorithm, envs, trial, step=s, acc=acc)
                           for s in (0, 5)]
                write_job(root, f"{algorithm}_{trial}_{i}", records)
    if incomplete_acc is not None:
        records = [make_record("Debug28", "ERM", [0], 7, acc=incomplete_acc)]
        write_job(root, "incomplete", records, done=False)


# ---------------------------------------------------------------------------------------
# Upstream's fixtures

def test_format_mean():
    assert collect_results.format_mean([0.1, 0.2, 0.3], False)[2] == "20.0 +/- 4.7"
    assert collect_results.format_mean([0.1, 0.2, 0.3], True)[2] == "20.0 $\\pm$ 4.7"
    assert collect_results.format_mean([], False) == (None, None, "X")


def test_print_table_text(capsys):
    collect_results.print_table([["1", "2"], ["3", "4"]], "Header text", ["R1", "R2"],
                                ["C1", "C2"], colwidth=10, latex=False)
    expected = ("\n-------- Header text\n"
                "C1" + " " * 8 + "  C2" + " " * 8 + " \n"
                "R1" + " " * 8 + "  1" + " " * 9 + "  2" + " " * 9 + " \n"
                "R2" + " " * 8 + "  3" + " " * 9 + "  4" + " " * 9 + " \n")
    assert capsys.readouterr().out == expected


def test_print_table_latex(capsys):
    collect_results.print_table([["1", "2"], ["3", "4"]], "Header text", ["R1", "R2"],
                                ["C1", "C2"], colwidth=10, latex=True)
    expected = ("\n\\begin{center}\n"
                "\\adjustbox{max width=\\textwidth}{%\n"
                "\\begin{tabular}{lc}\n"
                "\\toprule\n"
                "\\textbf{C1 & \\textbf{C2 \\\\\n"
                "\\midrule\n"
                "R1         & 1          & 2          \\\\\n"
                "R2         & 3          & 4          \\\\\n"
                "\\bottomrule\n"
                "\\end{tabular}}\n"
                "\\end{center}\n")
    assert capsys.readouterr().out == expected


# ---------------------------------------------------------------------------------------
# The ground truth (upstream's test sweep, copied so results.txt lands in tmp_path)

@pytest.fixture
def upstream_sweep(shared_dir, tmp_path):
    source = shared_dir / "reference" / "upstream-test-sweep"
    if not (source / "sweep").is_dir():
        pytest.skip(f"{source}/sweep not found: reference sweep unavailable")
    target = tmp_path / "sweep"
    shutil.copytree(source / "sweep", target)
    os.chmod(target, 0o755)
    return target, (source / "expected_collect_results.txt").read_bytes()


def test_end_to_end_byte_identical(upstream_sweep):
    sweep_dir, expected = upstream_sweep
    result = run_collect("--input_dir", str(sweep_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == expected
    assert (sweep_dir / "results.txt").read_bytes() == expected
    assert "VLCS / ERM: 40 jobs: 40 done, 0 incomplete" in result.stderr


def test_end_to_end_latex_structure(upstream_sweep):
    sweep_dir, _ = upstream_sweep
    result = run_collect("--input_dir", str(sweep_dir), "--latex")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:6] == ["\\documentclass{article}", "\\usepackage{booktabs}",
                         "\\usepackage{adjustbox}", "\\begin{document}",
                         "\\section{Full DomainBed results}", "% Total records: 200"]
    assert lines[-1] == "\\end{document}"
    assert lines.count("\\begin{tabular}{lccccc}") == 3   # VLCS: 4 envs + Avg
    assert lines.count("\\begin{tabular}{lcc}") == 3      # averages: VLCS + Avg
    assert sum(line.startswith("\\subsection{Model selection: ") for line in lines) == 3
    assert "ERM                  & 98.0 $\\pm$ 0.2       & 64.2 $\\pm$ 0.8" in result.stdout
    assert all(line.endswith(" \\\\") for line in lines if line.startswith("ERM"))
    assert (sweep_dir / "results.tex").read_text() == result.stdout


# ---------------------------------------------------------------------------------------
# Beyond upstream

def test_corrupt_and_truncated_lines_are_skipped_and_counted(tmp_path):
    debug_sweep(tmp_path)
    good = make_record("Debug28", "ERM", [2], 0, step=9)
    write_job(tmp_path, "broken", [good],
              extra_lines=["{not json\n", "\n", '["a list"]\n', '{"args": {"dataset": "Debug28"'])
    result = run_collect("--input_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Total records: 25" in result.stdout   # 12 jobs x 2 + the good line
    assert "skipped 3 corrupt or truncated lines in 1 results.jsonl files" in result.stderr


def _bad_records():
    """Lines collect_results used to crash on (issue 12, case 6), and other garbage."""
    def record(**changes):
        r = make_record("Debug28", "ERM", [2], 0, step=9)
        for key, value in changes.items():
            if key.startswith("args."):
                r["args"][key[5:]] = value
            else:
                r[key] = value
        return json.dumps(r) + "\n"
    return [
        b"\xff\xfe not UTF-8 \x80\n",
        record(**{"args.test_envs": 2}).encode(),           # an int, not a list
        record(**{"args.test_envs": [7]}).encode(),         # out of range
        record(**{"args.test_envs": [-1]}).encode(),
        record(**{"args.test_envs": [True]}).encode(),
        record(**{"args.test_envs": []}).encode(),
        record(env0_out_acc="0.5").encode(),                 # an accuracy as a string
        record(env1_in_acc=None).encode(),
        record(env2_in_acc=float("nan")).encode(),
        record(step="9").encode(),
        record(**{"args.trial_seed": [0]}).encode(),        # unhashable group key
        record(**{"args.dataset": 28}).encode(),
        record(**{"args": "not a dict"}).encode(),
        b'{"args": {}}\n', b"[1, 2, 3]\n", b'"a string"\n', b"[" * 5000 + b"\n",
    ]


def test_unusable_records_are_skipped_and_the_tables_unchanged(tmp_path):
    clean = tmp_path / "clean"
    debug_sweep(clean)
    expected = run_collect("--input_dir", str(clean)).stdout
    dirty = tmp_path / "dirty"
    debug_sweep(dirty)
    bad = _bad_records()
    job = write_job(dirty, "garbage", [], done=False)
    with open(os.path.join(job, "results.jsonl"), "wb") as f:
        f.write(b"".join(bad))
    result = run_collect("--input_dir", str(dirty))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == expected
    assert f"skipped {len(bad)} corrupt or truncated lines in 1 results.jsonl files" in result.stderr
    assert reporting.parse_record_line(json.dumps(make_record("Debug28", "ERM", [2]))) is not None


def test_fifo_results_file_and_job_json_do_not_hang(tmp_path):
    debug_sweep(tmp_path, trials=(0,))
    fifo_job = tmp_path / "fifo_job"
    fifo_job.mkdir()
    os.mkfifo(fifo_job / "results.jsonl")
    os.mkfifo(fifo_job / "job.json")
    # (timeout: a hang is the failure this guards against, not a measured duration)
    result = subprocess.run([sys.executable, "-m", "domainbed.scripts.collect_results",
                             "--input_dir", str(tmp_path)], cwd=REPO_ROOT,
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Total records: 12" in result.stdout
    assert "skipped 1 results.jsonl that are not regular files" in result.stderr


def test_results_txt_that_is_a_directory_is_one_line(tmp_path):
    debug_sweep(tmp_path, trials=(0,))
    (tmp_path / "results.txt").mkdir()
    result = run_collect("--input_dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "results.txt exists and is not a regular file" in lines[0]
    assert (tmp_path / "results.txt").is_dir()


def test_load_records_ignores_plain_files(tmp_path):
    debug_sweep(tmp_path, trials=(0,))
    (tmp_path / "results.txt").write_text("stale")
    assert len(reporting.load_records(str(tmp_path))) == 12


def test_completed_only_leaves_out_jobs_without_done(tmp_path):
    debug_sweep(tmp_path, incomplete_acc=0.99)
    everything = run_collect("--input_dir", str(tmp_path))
    completed = run_collect("--input_dir", str(tmp_path), "--completed_only")
    assert "Total records: 25" in everything.stdout
    assert "Total records: 24" in completed.stdout
    assert "left out 1 incomplete jobs" in completed.stderr
    assert "Debug28 / ERM: 13 jobs: 12 done, 1 incomplete" in everything.stderr


def test_tables_average_over_trials(tmp_path):
    debug_sweep(tmp_path)
    result = run_collect("--input_dir", str(tmp_path))
    # ERM: trial accs 0.65 and 0.75 (+0.01 * env) -> env 1 mean 71.0, stderr 100*std/sqrt(2)
    row = next(line for line in result.stdout.splitlines() if line.startswith("ERM"))
    assert row.split()[1:4] == ["70.0", "+/-", "3.5"]
    assert "X" not in result.stdout


def test_missing_pairs_are_explained(tmp_path):
    for i, envs in enumerate([[0], [1], [2]]):
        write_job(tmp_path, f"j{i}", [make_record("Debug28", "ERM", envs)])
    result = run_collect("--input_dir", str(tmp_path))
    assert "X" in result.stdout
    assert "needs the runs with 2 test envs" in result.stderr


def test_markdown_csv_json(tmp_path):
    debug_sweep(tmp_path, algorithms=("ERM", "Mixup"))
    markdown = run_collect("--input_dir", str(tmp_path), "--format", "markdown")
    assert "| Algorithm | 0 | 1 | 2 | Avg |" in markdown.stdout
    assert "## Model selection: training-domain validation set" in markdown.stdout
    assert (tmp_path / "results.md").read_text() == markdown.stdout

    table = list(csv.DictReader(io.StringIO(
        run_collect("--input_dir", str(tmp_path), "--format", "csv").stdout)))
    # 3 methods x (Debug28: 2 algs x 4 cols + averages: 2 algs x 2 cols)
    assert len(table) == 3 * (8 + 4)
    cell = next(r for r in table if r["table"] == "Debug28" and r["algorithm"] == "ERM"
                and r["column"] == "1" and r["selection_method"].startswith("training"))
    assert float(cell["mean"]) == pytest.approx(71.0)
    assert cell["n_trials"] == "2"

    document = json.loads(run_collect("--input_dir", str(tmp_path), "--format", "json").stdout)
    assert document["total_records"] == 48
    assert len(document["cells"]) == len(table)
    assert {t["table"] for t in document["tables"]} == {"Debug28", "Averages"}


def test_one_build_every_rendering_reads_the_same_cells(tmp_path, capsys):
    from domainbed import results

    debug_sweep(tmp_path, algorithms=("ERM", "Mixup"))
    built = results.build(reporting.load_records(str(tmp_path)))
    assert [t.name for t in built.all_tables()] == ["Debug28", "Averages"] * 3
    for table in built.all_tables():
        for row, algorithm in enumerate(table.row_labels):
            text, latex, markdown = (table.text_rows(style)[row]
                                     for style in ("text", "latex", "markdown"))
            for col, cell in enumerate(table.cells[row]):
                assert text[col] == collect_results.format_mean(cell.values, False)[2]
                assert latex[col] == collect_results.format_mean(cell.values, True)[2]
                assert markdown[col] == text[col].replace("+/-", "±")
            assert text[-1] == latex[-1] == markdown[-1] == "{:.1f}".format(table.averages[row])
    reporting.render(built, "csv")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    first = built.all_tables()[0]
    assert float(rows[0]["mean"]) == first.cells[0][0].mean
    assert float(rows[0]["stderr"]) == first.cells[0][0].err


def test_latex_and_other_format_conflict(tmp_path):
    result = run_collect("--input_dir", str(tmp_path), "--latex", "--format", "csv")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_input_dir_is_one_line_error(tmp_path):
    result = run_collect("--input_dir", str(tmp_path / "nope"))
    assert result.returncode != 0
    assert "is not a directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def vlcs_sweep(root, algorithm, accs_by_env, hparams_seed=0):
    """VLCS single-test-env jobs, one trial, test accuracy `accs_by_env[t]` for test env t."""
    for t, acc in enumerate(accs_by_env):
        record = make_record("VLCS", algorithm, [t], hparams_seed=hparams_seed, n_envs=4, acc=0)
        record[f"env{t}_in_acc"] = acc
        write_job(root, f"{algorithm}_{t}", [record])


def test_compare_upstream_deltas_and_markers(tmp_path):
    # Published ERM / VLCS, training-domain validation: C 97.7, L 64.3, S 73.4, V 74.6.
    vlcs_sweep(tmp_path, "ERM", [0.977, 0.653, 0.734, 0.746])
    vlcs_sweep(tmp_path, "Mixup", [0.5, 0.5, 0.5, 0.5], hparams_seed=3)
    write_job(tmp_path, "new", [make_record("VLCS", "NewAlg", [0], n_envs=4)])
    result = run_collect("--input_dir", str(tmp_path), "--compare_upstream")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("-------- Dataset: VLCS, model selection method: training-domain "
                        "validation set")
    erm = next(line for line in lines[start:] if line.startswith("ERM"))
    assert "97.7 +/- 0.0 (+0.0)" in erm and "65.3 +/- 0.0 (+1.0)" in erm
    mixup = next(line for line in lines[start:] if line.startswith("Mixup"))
    assert "(-48.3*)" in mixup   # published Mixup C = 98.3; random hparams -> protocol differs
    assert "mixup_alpha" in result.stdout
    new = next(line for line in lines[start:] if line.startswith("NewAlg"))
    assert "(n/a)" in new


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    debug_sweep(sweep_dir, algorithms=("ERM", "Mixup"), trials=(0,))
    result = run_collect("--input_dir", str(sweep_dir), "--plot", str(tmp_path / "plots"))
    assert result.returncode == 0, result.stderr
    pngs = sorted(os.listdir(tmp_path / "plots"))
    assert len(pngs) == 6 and all(p.startswith("Debug28_") for p in pngs)
    # A bar chart and the selected runs' training curves per selection method.
    assert len([p for p in pngs if p.endswith("_curves.png")]) == 3
    assert (tmp_path / "plots" / pngs[0]).read_bytes()[:4] == b"\x89PNG"


def test_reading_results_imports_no_torch_wilds_or_timm(fresh_python, tmp_path):
    """Every command that reads results, run in-process on a sweep, in every format."""
    debug_sweep(tmp_path, trials=(0,))
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from domainbed.results import selection
        from domainbed.scripts import collect_results, list_top_hparams
        from domainbed.studies import hparam_study, reproduce
        with contextlib.redirect_stdout(io.StringIO()):
            for fmt in collect_results.FORMATS:
                collect_results.main(["--input_dir", {str(tmp_path)!r}, "--format", fmt,
                                      "--compare_upstream"])
            list_top_hparams.main(["--input_dir", {str(tmp_path)!r}, "--dataset", "Debug28",
                                   "--algorithm", "ERM", "--test_env", "0"])
            records = reproduce.load_records({str(tmp_path)!r})
            reproduce.print_tables(records)
            cells = selection.selected_accuracies(records)
            reproduce.print_ablation(reproduce.ablation_rows(cells))
            reproduce.print_comparisons(reproduce.comparison_rows(cells))
            hparam_study.paired_rows(records)
        print(sorted(m for m in ("torch", "torchvision", "wilds", "timm") if m in sys.modules))
        """)
    result = fresh_python(code)
    assert result.stdout.strip() == "[]", result.stderr


def test_list_top_hparams(tmp_path):
    debug_sweep(tmp_path, trials=(0,))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "domainbed.scripts.list_top_hparams", "--input_dir", str(tmp_path),
         "--dataset", "Debug28", "--algorithm", "ERM", "--test_env", "1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Model selection: ") == 3
    assert result.stdout.count("trial_seed: 0") == 3
    assert "'test_acc': 0.66" in result.stdout


def test_full_disk_writing_results_txt_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from domainbed.lib import misc

    class FullDiskTee(misc.Tee):
        def write(self, message):
            raise OSError(errno.ENOSPC, "No space left on device")

    debug_sweep(tmp_path, trials=(0,))
    monkeypatch.setattr(misc, "Tee", FullDiskTee)
    assert collect_results.cli(["--input_dir", str(tmp_path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("collect_results: error: No space left on device")
    assert "free some space" in last


@pytest.mark.parametrize("fmt, out_file", [("text", "results.txt"), ("csv", "results.csv"),
                                           ("markdown", "results.md"), ("latex", "results.tex")])
def test_lone_surrogates_in_names_are_replaced_with_a_note(tmp_path, fmt, out_file):
    # json.dumps writes "ERM\udcff" as the escape \udcff: valid JSON, not encodable UTF-8.
    # Text and csv used to fail with UnicodeEncodeError (exit 1) and a --completed_only hint.
    for envs in ([0], [1], [2]):
        write_job(tmp_path, f"job{envs[0]}", [make_record("Debug28", "ERM\udcff", envs)])
    result = run_collect("--input_dir", str(tmp_path), "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert "UnicodeEncodeError" not in result.stderr and "--completed_only" not in result.stderr
    assert "ERM?" in result.stdout
    notes = [line for line in result.stderr.splitlines() if "cannot be written as UTF-8" in line]
    assert len(notes) == 1 and "'ERM\\udcff'" in notes[0], result.stderr
    with open(tmp_path / out_file, encoding="utf-8") as f:
        assert "ERM?" in f.read()


def test_lone_surrogates_stay_escaped_in_json(tmp_path):
    for envs in ([0], [1], [2]):
        write_job(tmp_path, f"job{envs[0]}", [make_record("Debug28", "ERM\udcff", envs)])
    result = run_collect("--input_dir", str(tmp_path), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "\\udcff" in result.stdout and "cannot be written" not in result.stderr
