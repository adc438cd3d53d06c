"""Run under torchrun from inside a bundle folder: train one epoch with multi_gpu_train.yaml after inserting a
``CheckpointLoader`` at index 0 of ``train#handlers``, as MONAI Label 0.8.5 does, and report how many ranks ran
validation. Used by tests/test_bundle.py; argument: the datalist file."""

from __future__ import annotations

import sys

import torch.distributed as dist
from monai.bundle import ConfigWorkflow


def main(datalist: str) -> None:
    workflow = ConfigWorkflow(
        config_file=["configs/train.yaml", "configs/multi_gpu_train.yaml"], workflow_type="train",
        datalist_file=datalist, max_epochs=1, image_size=[64, 64], num_workers=0,
    )
    workflow.parser["train#handlers"].insert(0, {
        "_target_": "CheckpointLoader", "load_path": "$@ckpt_dir + '/model.pt'", "load_dict": {"model": "@network"},
        "map_location": "cpu", "strict": False,
    })
    workflow.initialize()
    workflow.run()
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    validated = torch_count(evaluator.state.epoch >= 1)
    if dist.get_rank() == 0:
        print(f"ranks validated: {validated}", flush=True)
    workflow.finalize()


def torch_count(flag: bool) -> int:
    import torch

    value = torch.tensor([int(flag)])
    dist.all_reduce(value)
    return int(value.item())


if __name__ == "__main__":
    main(sys.argv[1])
