"""Getting DomainBed's datasets onto disk, in the layout the dataset classes read
(torch-free). Three modules, in the order a download meets them:

* `fetch`: resumable downloads with mirrors and checksums, and safe extraction (standard
  library plus tqdm; a `.part` file is renamed only once complete and checked);
* `install`: each dataset's recipe (archives, mirrors, how the unpacked files are
  arranged, or WILDS) and the install of one dataset (staging, checksums, the swap);
* `verify`: the layout checks behind `download --verify`, read from each dataset class's
  `EXPECTED_*` attributes.

`python -m domainbed.scripts.download` is the command line over `install`.
"""
