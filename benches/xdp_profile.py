#!/usr/bin/env python3
"""Where a loaded XDP program spends its time, by source line.

Samples every CPU with perf (cpu-clock: the machines here have no hardware
counters) while the program runs, then maps each sample inside the JIT'd
program to the BPF instruction it belongs to (the kernel's jited_line_info,
read with bpf(BPF_OBJ_GET_INFO_BY_FD)) and that instruction to its source
line (`bpftool prog dump xlated linum`). Debian's bpftool and perf cannot
disassemble JIT'd code (no libbfd), so the line info is the bridge.

A sample's address is where the CPU was interrupted: the cost of a slow
instruction (a call, an atomic, a load that misses) shows on the line of the
instruction after it.

    sudo python3 benches/xdp_profile.py --name vnet_xdp --seconds 5

benches/xdp-profile.sh runs it beside the XDP benchmark's flow-hit case.
"""
import argparse
import bisect
import collections
import ctypes
import re
import struct
import subprocess
import sys

SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
INFO_LEN = 256
# struct bpf_prog_info (include/uapi/linux/bpf.h): the fields read here.
NR_JITED_KSYMS, JITED_KSYMS = 104, 112
NR_LINE_INFO, LINE_INFO, JITED_LINE_INFO = 148, 152, 160
NR_JITED_LINE_INFO, LINE_INFO_REC_SIZE, JITED_LINE_INFO_REC_SIZE = 168, 172, 176

libc = ctypes.CDLL(None, use_errno=True)


def progress(msg):
    print(f"[xdp-profile] {msg}", file=sys.stderr, flush=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    fd = libc.syscall(SYS_BPF, cmd, buf, 128)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf command {cmd}: {ctypes.cast(libc.strerror(err), ctypes.c_char_p).value.decode()}")
    return fd


def prog_info(fd, fields):
    info = bytearray(INFO_LEN)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, info, offset, value)
    buf = ctypes.create_string_buffer(bytes(info), INFO_LEN)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("IIQ", fd, INFO_LEN, ctypes.addressof(buf)))
    return buf.raw


def jited_lines(prog_id):
    """(JIT address, xlated instruction index) of each line-info record,
    sorted by address."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("I", prog_id))
    sizes = prog_info(fd, [])
    (nr_lines,) = struct.unpack_from("I", sizes, NR_LINE_INFO)
    (nr_jited,) = struct.unpack_from("I", sizes, NR_JITED_LINE_INFO)
    rec, jited_rec = struct.unpack_from("II", sizes, LINE_INFO_REC_SIZE)
    if nr_lines == 0 or nr_jited != nr_lines:
        sys.exit(f"program {prog_id} has no line info for its JIT'd code ({nr_lines} records, {nr_jited} JIT'd): load it with its BTF")
    lines = ctypes.create_string_buffer(nr_lines * rec)
    jited = ctypes.create_string_buffer(nr_jited * jited_rec)
    prog_info(fd, [
        (NR_LINE_INFO, "I", nr_lines), (LINE_INFO, "Q", ctypes.addressof(lines)),
        (JITED_LINE_INFO, "Q", ctypes.addressof(jited)), (NR_JITED_LINE_INFO, "I", nr_jited),
        (LINE_INFO_REC_SIZE, "I", rec), (JITED_LINE_INFO_REC_SIZE, "I", jited_rec),
    ])
    out = []
    for i in range(nr_lines):
        (insn,) = struct.unpack_from("I", lines.raw, i * rec)
        (addr,) = struct.unpack_from("Q", jited.raw, i * jited_rec)
        out.append((addr, insn))
    return sorted(out)


def source_of_insns(prog_id):
    """xlated instruction index -> the source line in effect there."""
    text = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id), "linum"],
                          check=True, capture_output=True, text=True).stdout
    where, current = {}, "?"
    for line in text.splitlines():
        m = re.match(r"^; (.*) \[file:(\S+) line_num:(\d+)", line)
        if m:
            code = m.group(1).strip()[:72].replace("|", "\\|")  # inside a Markdown table
            current = f"{m.group(2).split('/')[-1]}:{m.group(3)}  {code}"
            continue
        m = re.match(r"^\s*(\d+): ", line)
        if m:
            where[int(m.group(1))] = current
    return where


def find_prog(name):
    text = subprocess.run(["bpftool", "prog", "show"], check=True, capture_output=True, text=True).stdout
    ids = [int(m.group(1)) for m in re.finditer(rf"^(\d+): \S+\s+name {re.escape(name)}\s", text, re.M)]
    if not ids:
        sys.exit(f"no loaded program named {name}: start what runs it first (benches/xdp-profile.sh does)")
    return ids[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="vnet_xdp", help="the program's name (bpftool prog show)")
    ap.add_argument("--seconds", type=float, default=5.0, help="how long perf samples")
    ap.add_argument("--top", type=int, default=25, help="source lines listed")
    args = ap.parse_args()

    prog_id = find_prog(args.name)
    lines = jited_lines(prog_id)
    where = source_of_insns(prog_id)
    progress(f"program {args.name} (id {prog_id}): {len(lines)} line-info records; sampling every CPU for {args.seconds:g} s")
    subprocess.run(["perf", "record", "-q", "-a", "-F", "20000", "-o", "/tmp/xdp-profile.data",
                    "--", "sleep", str(args.seconds)], check=True)
    progress("reading the samples")
    script = subprocess.run(["perf", "script", "-i", "/tmp/xdp-profile.data", "-F", "ip,sym"],
                            check=True, capture_output=True, text=True).stdout

    by_symbol, by_line = collections.Counter(), collections.Counter()
    addrs = [a for a, _ in lines]
    body = 0
    for row in script.splitlines():
        parts = row.split(None, 1)
        if len(parts) != 2:
            continue
        ip, sym = int(parts[0], 16), parts[1].strip()
        by_symbol[sym] += 1
        if sym.startswith("bpf_prog_") and sym.endswith("_" + args.name):
            i = bisect.bisect_right(addrs, ip) - 1
            if i >= 0:
                by_line[where.get(lines[i][1], "?")] += 1
                body += 1
    total = sum(by_symbol.values())
    if body == 0:
        sys.exit(f"no sample fell inside {args.name}: is something running it?")

    print(f"## Every CPU, by symbol ({total} samples, {args.seconds:g} s)\n")
    print("| share | symbol |\n| ---: | --- |")
    for sym, n in by_symbol.most_common(15):
        print(f"| {100 * n / total:.1f} % | `{sym}` |")
    print(f"\n## Inside {args.name}, by source file ({body} samples)\n")
    by_file = collections.Counter()
    for line, n in by_line.items():
        by_file[line.split(":")[0]] += n
    print("| share | file |\n| ---: | --- |")
    for f, n in by_file.most_common():
        print(f"| {100 * n / body:.1f} % | {f} |")
    print(f"\n## Inside {args.name}, by source line (the line after a slow instruction carries its cost)\n")
    print("| share | line |\n| ---: | --- |")
    for line, n in by_line.most_common(args.top):
        print(f"| {100 * n / body:.1f} % | `{line}` |")


if __name__ == "__main__":
    main()
