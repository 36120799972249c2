"""The report's section of Vela's estimates beside what a device measured for the same candidate: NPU
cycles (Vela's estimate vs the Ethos-U PMU on corstone300/board) and Flash (Vela's read-only memory vs
the linked ELF)."""

from __future__ import annotations

from pathlib import Path

from results.report.cells import MISSING, integer, kib, markdown_table, name, num, ratio
from results.report.figures import PLOT_DETAIL_LIMIT, new_figure, save, styles

ESTIMATE_PLOT = "estimate_vs_measured.png"


def estimate_plot(cycles, flash, path: Path) -> None:
    """Measured against estimated, NPU cycles and Flash side by side, with the line where they agree."""
    figure = new_figure(10.0, 4.5)
    for panel, (frame, x, y, scale, label) in enumerate(((cycles, "estimate_cycles", "measured_cycles", 1.0,
                                                          "NPU cycles"),
                                                         (flash, "vela_flash", "elf_flash", 1 / 1024, "Flash KiB")), 1):
        axes = figure.add_subplot(1, 2, panel)
        style = styles(frame.target)
        for target, group in frame.groupby("target"):
            axes.scatter(group[x] * scale, group[y] * scale, marker=style[target][0], color=style[target][1],
                         label=target, zorder=3)
            if len(frame) <= PLOT_DETAIL_LIMIT:
                for item in group.itertuples():
                    axes.annotate(item.candidate, (getattr(item, x) * scale, getattr(item, y) * scale), fontsize=7,
                                  xytext=(3, 3), textcoords="offset points")
        if not frame.empty:
            low, high = min(frame[x].min(), frame[y].min()) * scale, max(frame[x].max(), frame[y].max()) * scale
            axes.plot([low, high], [low, high], "--", color="0.5", linewidth=0.8, label="measured = Vela")
            axes.legend(fontsize=7)
        axes.ticklabel_format(style="sci", scilimits=(-3, 4))  # cycle counts would overlap in full
        axes.set_xlabel(f"Vela estimate ({label})")
        axes.set_ylabel(f"measured ({label})")
        axes.set_title(f"{label}: Vela vs device")
        axes.grid(alpha=0.3)
    save(figure, path)


def estimate_section(rows: list[dict], out_dir: Path) -> list[str]:
    """The table and plot, or nothing where no candidate was both estimated and measured on a device."""
    import pandas as pd

    path = out_dir / ESTIMATE_PLOT
    frame = pd.DataFrame([{"hash": r["candidate_hash"], "candidate": name(r), "target": r.get("target") or MISSING,
                           "accelerator": (r.get("target_settings") or {}).get("accelerator"),
                           "npu_cycles": num(r.get("npu_cycles")), "flash_bytes": num(r.get("flash_bytes")),
                           "own_estimate": num((r.get("extra") or {}).get("vela_npu_cycles"))}
                          for r in rows if r.get("candidate_hash")],
                         columns=["hash", "candidate", "target", "accelerator", "npu_cycles", "flash_bytes",
                                  "own_estimate"])
    estimated = frame[frame.target == "vela"].groupby(["hash", "accelerator"], dropna=False).agg(
        estimate_cycles=("npu_cycles", "median"), vela_flash=("flash_bytes", "median")).reset_index()
    measured = frame[frame.target != "vela"].groupby(["hash", "candidate", "target", "accelerator"], dropna=False).agg(
        measured_cycles=("npu_cycles", "median"), elf_flash=("flash_bytes", "median"),
        own_estimate=("own_estimate", "median")).reset_index()
    # Same candidate and accelerator where the device has one; any Vela row of the candidate otherwise (qemu-an547).
    exact = measured.merge(estimated, on=["hash", "accelerator"], how="left")
    loose = measured.merge(estimated.drop(columns="accelerator").groupby("hash").first(), on="hash", how="left")
    joined = exact.fillna({"estimate_cycles": loose.estimate_cycles, "vela_flash": loose.vela_flash})
    # corstone300 and board rows carry Vela's estimate for the model they ran.
    joined["estimate_cycles"] = joined.own_estimate.where(joined.own_estimate.notna(), joined.estimate_cycles)
    cycles = joined.dropna(subset=["estimate_cycles", "measured_cycles"])
    flash = joined.dropna(subset=["vela_flash", "elf_flash"])
    if cycles.empty and flash.empty:
        path.unlink(missing_ok=True)
        return []
    estimate_plot(cycles, flash, path)
    body = []
    for item in joined.loc[cycles.index.union(flash.index)].sort_values(["candidate", "target"]).itertuples():
        body.append([item.candidate, item.target, integer(item.estimate_cycles), integer(item.measured_cycles),
                     ratio(item.measured_cycles, item.estimate_cycles), kib(item.vela_flash), kib(item.elf_flash),
                     ratio(item.elf_flash, item.vela_flash)])
    return ["## Estimate vs measurement", "", f"![Estimate vs measurement]({ESTIMATE_PLOT})", "",
            markdown_table(["candidate", "target", "Vela NPU cycles", "measured NPU cycles", "measured / Vela",
                            "Vela Flash KiB", "ELF Flash KiB", "ELF / Vela"], body, right=range(2, 8)), "",
            "Measured NPU cycles: the Ethos-U PMU's active cycles per inference. ELF Flash is the whole image "
            "(code, TFLM, model and its data), Vela Flash the compiled model's read-only memory alone.", ""]
