"""A DIAGNOSTIC, never a method: `semisam` whose pseudo-label rounds prompt SAM with the unlabelled cases' LABEL
boxes (the labels are read here, on purpose, and only here). If even these targets do not lift the student over
`sup` in the la-cpu budget, the budget or the loss is the limit, not the targets. Same run folder layout as `train`
(evaluate it with `semisam-fast evaluate --run RUN`):

  python bench/oracle_targets.py --data ../shared/data/la2018 --list runs/la/dev.list --labelled 2 \
      --cache runs/la/cache --sam-weight 1.0 --seed 0 --out runs/dev/l2_oracle_w1_s0
"""
import argparse

from semisam_fast.formats import DEFAULT_FOLDER
from semisam_fast.sam_targets import CaseTargets, TargetOptions, case_targets
from semisam_fast.train import Trainer, build_trainer, preset
from semisam_fast.train.methods import SemiSAM


class OracleSemiSAM(SemiSAM):
    """Round targets: SAM from each unlabelled case's label box on its cached slices (no gate, no teacher)."""

    def round_targets(self, trainer: Trainer) -> dict[str, CaseTargets]:
        out = {}
        for case_id in trainer.unlabelled_volumes:
            label = trainer.dataset.load(case_id, with_label=True).label.astype("float32")  # the oracle's only source
            out[case_id] = case_targets(case_id, label, trainer.sam.cache, trainer.sam.backend,
                                        TargetOptions(margin=trainer.config.targets.margin))
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--list", default=None)
    parser.add_argument("--labelled", type=int, required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--sam-weight", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--round-every", type=int, default=None, help="iterations between rounds (preset: 200)")
    parser.add_argument("--backend", default="openvino", help="SAM decoder runtime (as train's --backend)")
    parser.add_argument("--artefact", default=DEFAULT_FOLDER, help="decoder artefact or export folder")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--sam-mix", default="none", help="as train's --sam-mix (none, copy-paste)")
    parser.add_argument("--train-precision", default="fp32", help="as train's --train-precision (fp32, bf16)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = preset("la-cpu", method="semisam", sam_weight=args.sam_weight, seed=args.seed,
                    iterations=args.iterations, sam_round_every=args.round_every, sam_mix=args.sam_mix,
                    train_precision=args.train_precision)
    trainer = build_trainer(config, args.data, args.list, args.labelled, 8, args.out, cache=args.cache,
                            backend=args.backend, artefact=args.artefact, precision=args.precision)
    trainer.method = OracleSemiSAM()
    result = trainer.run()
    print(f"oracle-target semisam (diagnostic), weight {args.sam_weight}: validation Dice {result['val_dice']:.4f}")


if __name__ == "__main__":
    main()
