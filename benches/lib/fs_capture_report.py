"""Markdown tables for benches/fs_capture.sh: results.tsv FACTS.tsv -> stdout."""

import statistics
import sys
from collections import defaultdict

MB = 1e6
STICK_BPS = 200 * MB
TARGET_BPS = 450 * MB

runs = defaultdict(lambda: defaultdict(list))  # group -> tool -> [(secs, rss KiB, cpu s, load)]
for line in open(sys.argv[1]):
    group, tool, secs, rss, cpu, load = line.rstrip("\n").split("\t")
    runs[group][tool].append((float(secs), int(rss), float(cpu), float(load)))


class Runs:
    """One command's runs: medians, and the range of the wall times."""

    def __init__(self, rows):
        self.n = len(rows)
        self.secs_all = sorted(r[0] for r in rows)
        self.median = {i: statistics.median(r[i] for r in rows) for i in range(4)}
        self.rss = max(r[1] for r in rows)

    def __getitem__(self, i):
        return self.rss if i == 1 else self.median[i]

    def secs(self):
        """The median wall time, with the range when there are several runs."""
        if self.n == 1:
            return f"{self[0]:.2f} s"
        return f"{self[0]:.2f} s ({self.secs_all[0]:.2f}–{self.secs_all[-1]:.2f}, {self.n} runs)"


results = {g: {t: Runs(rows) for t, rows in tools.items()} for g, tools in runs.items()}
facts = defaultdict(dict)  # disk -> key -> bytes
for line in open(sys.argv[2]):
    disk, key, value = line.rstrip("\n").split("\t")
    facts[disk][key] = int(value)


def mb(n):
    return f"{n / MB:,.0f} MB"


def esc(s):
    return s.replace("|", "\\|")


variants = [v for v in ("clean", "dirty") if f"{v} capture" in results]
if variants:
    print("### Stored bytes and capture time (unthrottled)\n")
    print("| disk | used (NTFS + outside partitions) | reliquary stored | partclone+zstd stored | stored ratio "
          "| reliquary capture | partclone+zstd capture | capture ratio | zstd whole disk (stored, time) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v in variants:
        f, c = facts[v], results[f"{v} capture"]
        used = f["used"] + f["outside"]
        rel, pc, zst = c["reliquary capture"], c["partclone + zstd"], c["zstd whole disk"]
        print(f"| {v} | {mb(used)} | {mb(f['stored'])} | {mb(f['pc_stored'])} | **{f['stored'] / f['pc_stored']:.3f}** "
              f"| {rel.secs()}, {rel[1] / 1024:.0f} MiB RSS, {rel[2]:.1f} CPU s, load {rel[3]:.1f} "
              f"| {pc.secs()}, {pc[2]:.1f} CPU s, load {pc[3]:.1f} | **{rel[0] / pc[0]:.2f}** "
              f"| {mb(f['zst_stored'])}, {zst.secs()} |")
    print()

    for v in variants:
        f = facts[v]
        used = f["used"] + f["outside"]
        limit = max(f["stored"] / STICK_BPS, used / TARGET_BPS)
        for profile in ("field", "unthrottled"):
            r = results.get(f"{v} {profile}")
            if not r:
                continue
            print(f"### Restore, {v} disk, {profile}\n")
            if profile == "field":
                print(f"Limit = max({mb(f['stored'])} / 200 MB/s, {mb(used)} / 450 MB/s) = {limit:.2f} s\n")
            print("| tool | seconds (median) | peak RSS | CPU s (median) | load avg before |" + (" × limit |" if profile == "field" else ""))
            print("|---|---:|---:|---:|---:|" + ("---:|" if profile == "field" else ""))
            for tool, t in r.items():
                extra = f" {t[0] / limit:.2f} |" if profile == "field" else ""
                print(f"| {esc(tool)} | {t.secs()} | {t[1] / 1024:.0f} MiB | {t[2]:.2f} | {t[3]:.1f} |{extra}")
            norb = r["reliquary restore --no-readback"][0]
            rb = r["reliquary restore"][0]
            print(f"\n- restore --no-readback: partclone / reliquary = **{r['zstd -dc | partclone.ntfs -r'][0] / norb:.2f}×**, "
                  f"dd / reliquary = **{r['zstd -dc | dd'][0] / norb:.2f}×**")
            print(f"- read-back adds {rb - norb:.2f} s (one read of the used bytes at 450 MB/s: {used / TARGET_BPS:.2f} s)")
            if profile == "field":
                print(f"- × limit: no read-back **{norb / limit:.2f}**, with read-back {rb / limit:.2f} "
                      f"(against limit + one read of the used bytes: {rb / (limit + used / TARGET_BPS):.2f})")
            print()

scales = [g for g in results if g.startswith("scale ")]
if scales:
    print("### Scale (unthrottled, image on the VM's disk)\n")
    print("| disk | used | stored | chunks (extents) | capture | capture RSS | restore --no-readback | RSS | restore (read-back) | RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for g in scales:
        n = g.split(" ", 1)[1]
        f, r = facts[n], results[g]
        cap, norb, rb = r["reliquary capture"], r["reliquary restore --no-readback"], r["reliquary restore"]
        layout = f"{f['chunks']:,} ({f['extents']:,})" if "chunks" in f else "—"
        print(f"| {n} | {mb(f['used'])} | {mb(f['stored'])} | {layout} | {cap.secs()} | {cap[1] / 1024:.0f} MiB "
              f"| {norb.secs()} | {norb[1] / 1024:.0f} MiB | {rb.secs()} | {rb[1] / 1024:.0f} MiB |")
    print()
    a = results[scales[0]]
    for g in scales[1:]:
        b = results[g]
        print(f"- {g} / {scales[0]}: capture {b['reliquary capture'][0] / a['reliquary capture'][0]:.2f}×, "
              f"restore --no-readback {b['reliquary restore --no-readback'][0] / a['reliquary restore --no-readback'][0]:.2f}×, "
              f"restore {b['reliquary restore'][0] / a['reliquary restore'][0]:.2f}×")
