"""The command line against what a user (or a hostile file) hands it.

Every input from outside gets one line on stderr naming what and where, and the
documented exit code (README "Exit codes"): never a traceback. A filtered or empty run
never replaces a full report; one run at a time per output folder.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import brief_buffer, main
from harness.runner import lock_output

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = str(ROOT / "matrix" / "default.toml")
SMALL = ('[defaults]\nram = "1M"\n[[endpoint]]\nname = "new/pc"\n'
         '[scenarios]\ninclude = ["idle", "ide-bus-error"]\n')


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"migmatrix {command}: "), err
    return err


@pytest.fixture
def small(tmp_path: Path) -> str:
    m = tmp_path / "small.toml"
    m.write_text(SMALL)
    return str(m)


# -- run: what it writes, and where ------------------------------------------------------


def test_progress_lines_keep_the_scenario_in_brackets(tmp_path: Path, small: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # Only unexpected cells are printed when stderr is not a terminal (a CI log).
    m = Path(small)
    m.write_text(SMALL + '[[expect]]\nverdicts = ["rejected"]\n')
    assert main(["run", "--matrix", small, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "[1/2] new/pc->new/pc[idle]: ok UNEXPECTED" in err
    assert "[2/2] new/pc->new/pc[ide-bus-error]: ok UNEXPECTED" in err


def test_a_filtered_run_writes_beside_the_full_report(tmp_path: Path, small: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--matrix", small, "-q"]) == 0
    full = (tmp_path / "reports" / "results.json").read_text()
    assert main(["run", "--matrix", small, "-q", "-k", "[idle]"]) == 0
    assert "the full report in reports/ is kept" in capsys.readouterr().err
    assert (tmp_path / "reports" / "results.json").read_text() == full
    selected = json.loads((tmp_path / "reports" / "selected" / "results.json").read_text())
    assert [c["id"] for c in selected["cells"]] == ["new/pc->new/pc[idle]"]
    assert selected["selection"] == ["[idle]"]
    assert main(["run", "--matrix", small, "-q", "--shard", "1/2"]) == 0
    assert (tmp_path / "reports" / "shard-1-of-2" / "results.json").exists()
    assert (tmp_path / "reports" / "results.json").read_text() == full


def test_a_filtered_run_refuses_to_replace_a_full_run_it_is_pointed_at(
        tmp_path: Path, small: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o")
    assert main(["run", "--matrix", small, "-q", "--out", out]) == 0
    before = (tmp_path / "o" / "index.html").read_text()
    capsys.readouterr()
    assert main(["run", "--matrix", small, "-q", "--out", out, "-k", "idle"]) == 2
    err = one_line_error(capsys, "run")
    assert "holds the full run of matrix 'small' (2 cells" in err and "another --out" in err
    assert (tmp_path / "o" / "index.html").read_text() == before
    # A filtered run may replace a filtered run.
    sel = str(tmp_path / "sel")
    assert main(["run", "--matrix", small, "-q", "--out", sel, "-k", "idle"]) == 0
    assert main(["run", "--matrix", small, "-q", "--out", sel, "-k", "bus"]) == 0


def test_a_run_where_no_cell_matched_writes_nothing(tmp_path: Path, small: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert main(["run", "--matrix", small, "-q", "--out", str(out), "-k", "nothing"]) == 3
    assert "no cell ran: -k 'nothing' matched none of the 2 cell(s)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["list", "--matrix", small, "-k", "nothing"]) == 3


def test_one_run_per_output_folder(tmp_path: Path, small: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    # Another process holds the folder (the lock is an flock: per open file, so a child
    # process holding it is what a second `migmatrix run` sees).
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from harness.runner import lock_output\n"
         f"with lock_output(Path({str(out)!r})):\n"
         "    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(["run", "--matrix", small, "-q", "--out", str(out)]) == 2
        err = one_line_error(capsys, "run")
        assert f"{out}/ is in use by migmatrix run (pid {holder.pid}" in err
        assert not (out / "results.json").exists()
        assert main(["report", DEFAULT, "--out", str(out)]) == 2  # report takes it too
    finally:
        holder.communicate("")
    assert main(["run", "--matrix", small, "-q", "--out", str(out)]) == 0


def test_the_lock_is_released_after_a_run(tmp_path: Path) -> None:
    with lock_output(tmp_path):
        pass
    with lock_output(tmp_path):  # not held any more
        pass


def test_jobs_must_be_positive_and_are_capped_at_the_cells(
        tmp_path: Path, small: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run", "--matrix", small, "--jobs", "0"])
    assert e.value.code == 2
    assert "--jobs: 0 is not at least 1" in capsys.readouterr().err
    assert main(["run", "--matrix", small, "-q", "--out", str(tmp_path / "o"),
                 "--jobs", "100000"]) == 0
    assert "--jobs 100000: running 2 worker(s)" in capsys.readouterr().err


# -- files and values from outside -------------------------------------------------------


def test_a_non_utf8_matrix_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.toml"
    m.write_bytes(b'name = "\xff"\n' + SMALL.encode())
    assert main(["list", "--matrix", str(m)]) == 2
    assert "(file): not UTF-8 text: byte 0xff at offset 8" in one_line_error(capsys, "list")


def test_an_unknown_matrix_name_lists_the_shipped_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--matrix", "defualt"]) == 2
    err = one_line_error(capsys, "list")
    assert "no shipped matrix of that name (shipped: default, " in err and "history" in err


@pytest.mark.parametrize("ram", ["99999999999G", "0", "3000", "lots"])
def test_a_bad_ram_size_is_one_line(tmp_path: Path, ram: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["save", "--release", "new", "--ram", ram, "-o", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "save")
    assert main(["load", "--release", "new", "--ram", ram, str(tmp_path / "s")]) == 2
    one_line_error(capsys, "load")


def test_a_ram_size_the_host_cannot_map_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 TiB is a size a PC could address; whether this host maps it depends on its
    # overcommit policy, so the refusal (mmap's ENOMEM) is made to happen.
    from harness.emulator import machine

    def no_memory(*args: object, **kw: object) -> None:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(machine.Machine, "__init__", no_memory)
    assert main(["save", "--release", "new", "--ram", "1024G", "-o", str(tmp_path / "s")]) == 2
    err = one_line_error(capsys, "save")
    assert "--ram 1024G: this host cannot provide 1099511627776 bytes of guest RAM" in err


def test_a_save_the_release_dies_in_is_one_line_and_leaves_no_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RHEL 6.1 dies saving a pending CD-ROM media event, as the real build does."""
    out = tmp_path / "s.mig"
    assert main(["save", "--release", "rhel6.1", "--ram", "1M", "--scenario",
                 "atapi-media-event", "-o", str(out)]) == 1
    err = one_line_error(capsys, "save")
    assert "the source would crash: 0000:00:01.1/ide/" in err and "SIGSEGV" in err
    assert not out.exists()


def test_the_readme_baseline_example_without_a_baseline_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(["run", "--matrix", DEFAULT, "-q", "--out", str(out), "-k", "new/pc->new/pc["]) == 0
    capsys.readouterr()
    assert main(["report", str(out / "results.json"), "--baseline",
                 str(tmp_path / "old" / "results.json"), "--out", str(out)]) == 2
    assert "old/results.json: cannot read: No such file" in one_line_error(capsys, "report")


def test_analyze_of_a_file_that_is_no_stream_says_bad_magic(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "random.bin"
    f.write_bytes(bytes(range(256)) * 8)
    assert main(["analyze", str(f)]) == 1
    out = capsys.readouterr().out
    assert "stopped: bad magic: 0x00010203, not a savevm stream" in out


def test_analyze_takes_the_destinations_vga_like_its_nic(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "rhel.mig"
    assert main(["save", "--release", "rhel6.2", "--machine", "rhel6.2.0", "--ram", "1M",
                 "--vga", "none", "-o", str(f)]) == 0
    capsys.readouterr()
    for options, expected in (([], ("rtl8139", "none")),
                              (["--nic", "e1000", "--vga", "cirrus"], ("e1000", "cirrus"))):
        assert main(["analyze", str(f), "--as-destination", "0.14/pc", *options, "--json"]) == 0
        divergence = json.loads(capsys.readouterr().out)["divergence"]
        assert (divergence["nic"], divergence["vga"]) == expected


def test_schema_diff_exits_as_documented(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "diff", "new/pc-0.14", "0.14/pc"]) == 1  # errors found
    assert main(["schema", "diff", "new/pc", "new/pc"]) == 0
    assert main(["schema", "diff", "9.9/pc", "new/pc"]) == 2


def test_a_closed_output_pipe_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` gone before the output is written
    try:
        done = subprocess.run([sys.executable, "-m", "harness.cli", "releases", "--json"],
                              stdout=write_end, stderr=subprocess.PIPE, cwd=ROOT)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == b""


def test_every_option_of_run_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--matrix FILE|NAME a matrix file, or the name of a shipped one" in text
    assert "--out DIR folder for results.json" in text
    assert "--jobs N cells run in parallel" in text


# -- load --dump-state -------------------------------------------------------------------


def test_dump_state_summarises_long_buffers(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    stream = tmp_path / "s.mig"
    assert main(["save", "--release", "0.14", "--ram", "1M", "--scenario", "ide-pio",
                 "-o", str(stream)]) == 0
    capsys.readouterr()
    assert main(["load", "--release", "0.14", "--ram", "1M", str(stream), "--dump-state"]) == 0
    brief = capsys.readouterr().out
    assert len(brief) < 64 << 10  # was 1 MB, mostly io_buffer hex
    doc = json.loads(brief)
    io_buffer = doc["devices"]["0000:00:01.1/ide"]["bus[0]/ifs[0]/io_buffer"]
    assert io_buffer.startswith("<") and "bytes, sha256 " in io_buffer
    assert main(["load", "--release", "0.14", "--ram", "1M", str(stream), "--dump-state",
                 "--full"]) == 0
    full = json.loads(capsys.readouterr().out)
    raw = bytes.fromhex(full["devices"]["0000:00:01.1/ide"]["bus[0]/ifs[0]/io_buffer"])
    assert io_buffer == brief_buffer(raw.hex())
    assert f"<{len(raw)} bytes" in io_buffer


def test_a_buffer_summary_says_where_the_bytes_are() -> None:
    data = bytearray(300)
    data[0:2] = b"\x01\x02"
    data[100] = 7
    text = brief_buffer(bytes(data).hex())
    assert text.startswith("<300 bytes, sha256 ")
    assert text.endswith("3 non-zero: non-zero at 0-1, 100>")
    assert brief_buffer(bytes(300).hex()).endswith("0 non-zero: all zero>")
    other = bytearray(data)
    other[299] = 1
    assert brief_buffer(bytes(other).hex()) != text  # a diff of two dumps still shows it


def test_a_path_that_cannot_be_used_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing")
    for argv in (["load", "--release", "new", missing], ["load", "--release", "new",
                                                          str(tmp_path)],
                 ["analyze", missing], ["report", missing], ["list", "--matrix", missing],
                 ["save", "--release", "new", "-o", str(tmp_path / "no" / "such")]):
        assert main(argv) == 2, argv
        one_line_error(capsys, argv[0])

