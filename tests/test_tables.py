"""`tables --paper udc`: ours from the store beside the paper's cited numbers, and a named command
for every table whose runs are missing."""

from results.tables import PAPER_TABLE3, paper_tables, table3, table4
from search.strategy.ablation import TABLE3_ROWS
from search.table2 import format_table2, table2
from tests.test_report import _searched_row


def _ablation_row(name, accuracy, met):
    row = _searched_row(f"table3-{name}-mbv2-24kB", "udc", 24000, accuracy, met=met, ablation=name)
    row["extra"]["search"]["ablation"].update(zip(("rejection", "mc_samples", "projection", "lambda_tuning"),
                                                  TABLE3_ROWS[name]))
    return row


def test_table3_lists_ablation_rows_in_the_papers_order_beside_its_numbers():
    table = table3([_ablation_row("full-udc", 0.85, True), _ablation_row("vanilla-dnas", 0.80, False)])
    assert [row[0] for row in table.rows] == ["vanilla-dnas", "full-udc"]
    vanilla, full = table.rows
    assert vanilla[1:5] == ["", "", "", ""] and full[1:5] == ["✓", "✓", "✓", "✓"]
    assert vanilla[6] == "NO" and full[7] == "85.00"
    assert vanilla[-1] == PAPER_TABLE3[0] == "*" and full[-1] == "79.24"


def test_missing_runs_name_the_command_and_cited_rows_stay_marked(tmp_path):
    computed = table2(seed=0)
    tables = {t.name: t for t in paper_tables([], computed, format_table2(computed))}
    assert "python -m harness run --ablation table3" in tables["table3"].markdown()
    assert "python -m harness run --dataset cifar100" in tables["table6"].markdown()
    assert all(row[1].startswith("cited:") for row in tables["table6"].rows)
    assert f"| 0.66 | {computed[0]['L_E']:.3f} (paper 0.04)" in tables["table2"].markdown()
    paths = tables["table4"].write(tmp_path)
    assert paths[1].read_text().splitlines()[0].startswith("model,source,original")


def test_table4_gives_our_sizes_with_the_flash_ratio():
    row = {"status": "ok", "candidate_name": "udc-mbv2-24kB", "target": "vela", "original_weight_bytes": 47140,
           "rhs_bound_bytes": 23270, "coded_mask_bytes": 23460, "flash_bytes": 40510}
    ours = table4([row]).rows[0]
    assert ours[:2] == ["udc-mbv2-24kB", "ours, vela (KB)"] and ours[3] == "23.27" and ours[5] == "40.51 (1.16x)"


def test_table4_takes_the_latest_of_repeated_measurements_and_vela_weights_on_firmware_targets():
    def measured(flash, candidate_hash="a" * 64, **overrides):
        return {"status": "ok", "candidate_name": "net", "candidate_hash": candidate_hash, "target": "vela",
                "settings_key": "k", "original_weight_bytes": 4000, "rhs_bound_bytes": 1000, "coded_mask_bytes": 1100,
                "flash_bytes": flash, "encoded_weight_bytes": 1500, **overrides}

    rows = [measured(2100), measured(2000), measured(2400, candidate_hash="b" * 64),
            measured(300_000, target="corstone300", settings_key="fvp")]
    ours = [row for row in table4(rows).rows if row[1].startswith("ours")]
    assert [row[:2] + row[5:] for row in ours] == [
        ["net [aaaaaaaa]", "ours, vela (KB)", "2.00 (2.00x)"],
        ["net [bbbbbbbb]", "ours, vela (KB)", "2.40 (1.67x)"],
        ["net [aaaaaaaa]", "ours, corstone300, encoded weights (KB)", "1.50 (2.67x)"]]


def test_table6_sets_our_compressed_size_beside_the_papers_with_flash_apart():
    """The paper's Table 6 sizes are compressed sizes (the eq. 4 bound with the mask range-coded), not
    Flash: ours are given in the same metric, and Vela's Flash in a column of its own."""
    row = {"status": "ok", "candidate_name": "udc-cifar", "strategy": "udc", "accuracy_int8": 0.7, "target": "vela",
           "extra": {"dataset": "cifar100"}, "coded_mask_bytes": 553_000, "flash_bytes": 700_000}
    table = paper_tables([row])[2]
    assert table.name == "table6"
    assert table.headers[3].startswith("compressed size MB") and table.headers[4] == "Vela Flash MB"
    ours, first_cited = table.rows[0], table.rows[1]
    assert ours[2:] == ["70.00", "0.553", "0.700"]
    assert first_cited == ["UDC", "cited: the UDC paper", "79.24", "0.553", "—"]
