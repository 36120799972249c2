"""``mlperf-dataset``: test images written for MLPerf Tiny's runner (``harness.runner_dataset``), so its
``main.py --dataset_path DIR`` measures our firmware, or any device, on them."""

from __future__ import annotations

from pathlib import Path

from core.errors import UsageError


def add_parser(commands) -> None:
    parser = commands.add_parser("mlperf-dataset", help="write test images in MLPerf Tiny's runner format")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default), cifar10, synthetic, ...")
    parser.add_argument("--data-path", help="dataset directory")
    parser.add_argument("--model-id", default="ic01",
                        help="the model id the device announces (default ic01, our firmware's default)")
    parser.add_argument("--input-format", choices=("int8", "uint8-shifted"),
                        help="what the device takes (default: the model id's, docs/protocol.md)")
    parser.add_argument("--tflite", type=Path, help="the device's model: its input quantisation (default: "
                        "8-bit pixels, scale 1/255, zero point -128)")
    parser.add_argument("--samples", type=int, default=200, help="test images to write (default 200; 0 = all)")
    parser.add_argument("--out", type=Path, required=True, help="the runner's dataset folder")


def main(args) -> int:
    from core.data import load_dataset
    from core.tflite_model import read_tflite
    from harness.measure import pixel_codes, quantize_inputs
    from harness.runner_dataset import write_runner_dataset
    from targets.mlperf_models import input_format

    if args.samples < 0:
        raise UsageError(f"--samples {args.samples}: pass a count of test images, or 0 for all")
    dataset = load_dataset(args.dataset, args.data_path)
    count = len(dataset.x_test) if args.samples == 0 else min(args.samples, len(dataset.x_test))
    images, labels = dataset.x_test[:count], dataset.y_test[:count]
    if args.tflite is not None:
        info = read_tflite(args.tflite)
        if tuple(info.input.shape[1:]) != tuple(images.shape[1:]):
            raise UsageError(f"{args.tflite}: model input {tuple(info.input.shape[1:])} does not fit {dataset.name} "
                             f"images {tuple(images.shape[1:])}; pass the dataset the model was trained on")
        inputs = quantize_inputs(images, info.input)
    else:
        inputs = pixel_codes(images)
    folder = write_runner_dataset(inputs, labels, dataset.num_classes, args.model_id,
                                  args.input_format or input_format(args.model_id), args.out)
    print(f"{count} {dataset.name} test images for model id {args.model_id} in {folder}; run MLPerf Tiny's runner "
          f"with --dataset_path {args.out}")
    return 0
