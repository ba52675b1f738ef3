"""List, per selection method and trial, every hparams_seed's score for one test env.

    python -m domainbed.scripts.list_top_hparams --input_dir SWEEP --dataset VLCS \\
        --algorithm ERM --test_env 0

A debugging aid, as upstream: the runs are ranked best first (the one each selection
method picks comes first), with their hparams and job directories. Torch-free.
"""
import argparse

from domainbed import model_selection
from domainbed.lib import reporting


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Rank the hparams of one sweep cell")
    parser.add_argument("--input_dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--test_env", type=int, required=True)
    return parser.parse_args(argv)


def print_ranking(selection_method, group):
    print(f"trial_seed: {group['trial_seed']}")
    for run_acc, run_records in selection_method.hparams_accs(group["records"]):
        print(f"\t{run_acc}")
        print("\t\thparams:")
        for key, value in sorted(run_records[0]["hparams"].items()):
            print(f"\t\t\t{key}: {value}")
        print("\t\toutput_dirs:")
        for output_dir in run_records.select("args.output_dir").unique():
            print(f"\t\t\t{output_dir}")


def main(argv=None):
    args = parse_args(argv)
    records = reporting.load_records(args.input_dir)
    print("Total records:", len(records))
    groups = (reporting.get_grouped_records(records)
              .filter_equals("dataset, algorithm, test_env",
                             (args.dataset, args.algorithm, args.test_env))
              .sorted(key=lambda group: group["trial_seed"]))
    if not len(groups):
        print(f"No records for {args.dataset} / {args.algorithm} / test env {args.test_env}.")
    for selection_method in model_selection.SELECTION_METHODS:
        print(f"Model selection: {selection_method.name}")
        for group in groups:
            print_ranking(selection_method, group)


if __name__ == "__main__":
    main()
