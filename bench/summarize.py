"""Prints the table of bench/run_all.sh: every figure next to its peer or physical limit,
the ratio, and the goal, from the JSON lines the benchmarks appended.

    /usr/bin/python3 bench/summarize.py results.jsonl

Several lines for the same benchmark (rounds) are reduced to their median. Goals marked
"(issue)" come from the issues; the others are the bar this benchmark holds dtrain to.
"""
import json
import statistics
import sys
from collections import defaultdict


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) not in (None, 0)]
    return statistics.median(vals) if vals else None


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def verdict(ratio, goal):
    if ratio is None:
        return ""
    return "ok" if round(ratio, 2) >= goal else "BELOW"  # judged as printed


def verdict_le(value, goal, digits=2):
    if value is None:
        return ""
    return "ok" if round(value, digits) <= goal else "BELOW"  # judged as printed


def main():
    rows = [json.loads(line) for path in sys.argv[1:] for line in open(path) if line.strip()]
    train = defaultdict(list)
    ckpt = defaultdict(list)
    breakdown = [r for r in rows if r.get("bench") == "ckpt_breakdown"]
    loader = [r for r in rows if r.get("bench") == "loader" and r.get("impl") == "dtrain"]
    asyncb = defaultdict(list)
    for r in rows:
        if r.get("bench") == "train":
            train[(r["impl"], r["model"], r["world"])].append(r)
        elif r.get("bench") == "ckpt":
            ckpt[(r["impl"], r.get("world", 1))].append(r)
        elif r.get("bench") == "async":
            asyncb[r.get("world", 1)].append(r)

    out = []
    p = out.append
    if train:
        p("### Training throughput (1 thread per rank, median step; samples/s of the whole job)\n")
        p("| model | ranks | dtrain samples/s | peer | peer samples/s | dtrain/peer | goal | "
          "least CPU share | grad all-reduce bytes | ranks together / raw MPI_Allreduce GB/s "
          "| ratio (goal >= 0.9) | exposed / all-reduce (goal <= 0.3) | in training GB/s (info) |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for model in ("mlp", "resnet18"):
            for world in (1, 2):
                d = train.get(("dtrain", model, world))
                if not d:
                    continue
                t = train.get(("torch", model, world), [])
                ds, ts = med(d, "samples_per_s"), med(t, "samples_per_s")
                # Each round ran dtrain then its peer back to back: pair them, so that the
                # machine's load drifting between rounds cancels in the ratio.
                pairs = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(d, t)]
                ratio = statistics.median(pairs) if pairs else None
                shares = [r.get("cpu_share") for r in d + t if r.get("cpu_share") is not None]
                cpu = f"{min(shares):.2f}" if shares else "n/a"
                peer = "PyTorch DDP gloo" if world > 1 else "PyTorch (plain)"
                goal = 1.0 if world > 1 else 0.95
                cols = " | | | | "
                if world > 1:
                    raw, s = med(d, "raw_allreduce_gbps"), med(d, "synced_allreduce_gbps")
                    r3 = s / raw if s and raw else None
                    exposed = med(d, "exposed_over_allreduce")
                    cols = (f"{d[0]['bytes_per_reduce'] / 1e6:.1f} MB in {d[0]['buckets']} bucket(s) | "
                            f"{fmt(s, '.2f')} / {fmt(raw, '.2f')} | {fmt(r3, '.2f')} {verdict(r3, 0.9)} | "
                            f"{fmt(exposed, '.2f')} {verdict_le(exposed, 0.3)} | "
                            f"{fmt(med(d, 'allreduce_gbps'), '.2f')}")
                p(f"| {model} | {world} | {fmt(ds, '.1f')} | {peer} | {fmt(ts, '.1f')} | "
                  f"{fmt(ratio, '.2f')} {verdict(ratio, goal)} | >= {goal} | {cpu} | {cols} |")
        gf = [(m, med(train[("dtrain", m, w)], "model_gflops"), med(train[("dtrain", m, w)], "sgemm_gflops"), w)
              for (i, m, w) in train if i == "dtrain" and m == "mlp"]
        for m, g, s, w in sorted(gf, key=lambda x: x[3]):
            if g and s:
                p(f"\nmlp on {w} rank(s): {g:.1f} GFLOP/s per rank vs single-thread sgemm "
                  f"{s:.1f} GFLOP/s in the same run: {g / s:.2f} of the compute limit.")
        p("")

    if ckpt:
        p("### Checkpoint save / cold load of the full training state (gpt, params + AdamW state)\n")
        t = ckpt.get(("torch", 1), [])
        p("| ranks | figure | dtrain | limit or peer (same run) | its value | dtrain / it | goal |")
        p("|---|---|---|---|---|---|---|")
        for world in sorted(w for (i, w) in ckpt if i == "dtrain"):
            d = ckpt[("dtrain", world)]
            size = f"{d[0]['bytes'] / 1e9:.2f} GB"

            def row(fig, val, ref, ref_val, ratio, goal, goal_text):
                p(f"| {world} | {fig} | {val} | {ref} | {ref_val} | "
                  f"{fmt(ratio, '.2f')} {verdict(ratio, goal) if goal else ''} | {goal_text} |")

            def vs_peer(key):  # dtrain/peer, each normalized by its own same-run limit
                a, b = med(d, key), med(t, key)
                return a / b if a and b else None

            sv, lv = med(d, "save_gbps"), med(d, "load_gbps")
            row(f"save {size}", f"{fmt(sv, '.2f')} GB/s", "dd write+fsync",
                f"{fmt(med(d, 'dd_write_gbps'), '.2f')} GB/s", med(d, "save_vs_dd"), 0.9,
                ">= 0.9 (issue)")
            row("", "", "write(2)+fsync of the same bytes", f"{fmt(med(d, 'posix_write_gbps'), '.2f')} GB/s",
                med(d, "save_vs_posix"), 0.9, ">= 0.9")
            row("", "", "torch.save+fsync, via dd ratios",
                f"{fmt(med(t, 'save_vs_dd'), '.2f')}x dd", vs_peer("save_vs_dd"), 1.0, "> 1 (issue)")
            row("", "", "torch.save+fsync, via write(2) ratios",
                f"{fmt(med(t, 'save_vs_posix'), '.2f')}x write(2)", vs_peer("save_vs_posix"), 1.0, "> 1 (issue)")
            row("cold load", f"{fmt(lv, '.2f')} GB/s", "cold dd read",
                f"{fmt(med(d, 'dd_read_gbps'), '.2f')} GB/s", med(d, "load_vs_dd"), 0.9, ">= 0.9")
            row("", "", "cold read(2) of the same bytes", f"{fmt(med(d, 'posix_read_gbps'), '.2f')} GB/s",
                med(d, "load_vs_posix"), 0.9, ">= 0.9")
            row("", "", "cold torch.load, via read(2) ratios",
                f"{fmt(med(t, 'load_vs_posix'), '.2f')}x read(2)", vs_peer("load_vs_posix"), 1.0, "> 1")
            ms, ml = med(d, "save_extra_bytes"), med(d, "load_extra_bytes")
            frac = (ms or 0) / d[0]["bytes"]
            p(f"| {world} | peak extra memory per rank | save {(ms or 0) / 1e6:.0f} MB, load "
              f"{(ml or 0) / 1e6:.0f} MB | the state | {d[0]['bytes'] / 1e6:.0f} MB | save "
              f"{frac:.3f} {'ok' if frac <= 0.1 else 'BELOW'} | save <= 0.1 |")
        if t:
            p(f"\nPeers (1 process, same tensors): torch.save+fsync {fmt(med(t, 'save_gbps'), '.2f')} GB/s, "
              f"torch.load cold {fmt(med(t, 'load_gbps'), '.2f')} GB/s; h5py write+fsync "
              f"{fmt(med(t, 'h5py_save_gbps'), '.2f')} GB/s ({fmt(med(t, 'h5py_save_vs_dd'), '.2f')}x dd), "
              f"h5py cold read {fmt(med(t, 'h5py_load_gbps'), '.2f')} GB/s "
              f"({fmt(med(t, 'h5py_load_vs_dd'), '.2f')}x dd). dtrain vs a peer divides the two "
              f"same-run ratios to a limit, so that the disk's drift between the runs cancels.")
        diag = [(w, med(ckpt[("dtrain", w)], "bcast_per_piece_s"), med(ckpt[("dtrain", w)], "bcast_packed_s"))
                for (i, w) in ckpt if i == "dtrain" and w > 1]
        for w, a, b in sorted(diag):
            if a:
                p(f"\nLoad fill-in on {w} ranks, timed alone: one broadcast per piece {a:.3f} s, "
                  f"packed one broadcast per rank {fmt(b, '.3f')} s.")
        p("")
    coord = {w: med(ckpt[("dtrain", w)], "save_coord_s") for (i, w) in ckpt if i == "dtrain"}
    coord = {w: c for w, c in coord.items() if c is not None}
    if asyncb or coord:
        p("### Asynchronous checkpoints (stall of save_async; training time with a checkpoint every 20 iterations)\n")
        p("| ranks | figure | value | goal | ok/BELOW |")
        p("|---|---|---|---|---|")
        for world in sorted(set(asyncb) | set(coord)):
            a = asyncb.get(world, [])

            def row(fig, val, goal, ok):
                p(f"| {world} | {fig} | {val} | {goal} | {ok} |")

            if any("stall_s" in r for r in a):
                size = f"{a[0]['bytes'] / 1e9:.2f} GB"
                st, mc, sy = med(a, "stall_s"), med(a, "memcpy_s"), med(a, "sync_save_s")
                r1, r2 = med(a, "stall_vs_memcpy"), med(a, "stall_vs_sync")
                row(f"save_async stall (steady state) / memcpy of the state ({size})",
                    f"{fmt(st, '.3f')} s / {fmt(mc, '.3f')} s: {fmt(r1, '.2f')}", "<= 1.5 (issue)",
                    verdict_le(r1, 1.5))
                cm, rb = med(a, "commit_s"), med(a, "stall_commit_vs_memcpy")
                row("(save_async stall + committing poll_async) / memcpy of the state",
                    f"({fmt(st, '.3f')} + {fmt(cm, '.3f')}) s / {fmt(mc, '.3f')} s: {fmt(rb, '.2f')}",
                    "<= 1.5 (issue, counting both stalls)", verdict_le(rb, 1.5))
                row("save_async stall / synchronous save",
                    f"{fmt(st, '.3f')} s / {fmt(sy, '.3f')} s: {fmt(r2, '.2f')}", "<= 0.1 (issue)",
                    verdict_le(r2, 0.1))
                sf, mf = med(a, "stall_first_s"), med(a, "memcpy_fresh_s")
                row("first save_async stall (fresh buffers) / memcpy into fresh buffers",
                    f"{fmt(sf, '.3f')} s / {fmt(mf, '.3f')} s: {fmt(sf / mf if sf and mf else None, '.2f')}",
                    "info", "")
                om, ob = med(a, "own_memcpy_s"), med(a, "own_bytes")
                ov = med(a, "own_memcpy_vs_sync")
                row(f"memcpy of the rank's own pieces only ({fmt(ob / 1e9 if ob else None, '.2f')} GB) / synchronous save",
                    f"{fmt(om, '.3f')} s: {fmt(ov, '.2f')}", "info (a per-shard snapshot)", "")
                c = med(a, "sync_coord_s")
                row("synchronous save minus its slowest shard write (dtrain_async_bench)",
                    f"{fmt(c, '.3f')} s", "< 0.020 s at 4 ranks (issue)",
                    ("ok" if c < 0.020 else "BELOW") if c is not None and world == 4 else "")
            if world in coord:
                c = coord[world]
                row("save minus its slowest shard write (dtrain_ckpt_bench)", f"{c:.3f} s",
                    "< 0.020 s at 4 ranks (issue)", ("ok" if c < 0.020 else "BELOW") if world == 4 else "")
            if any("train_async_vs_none" in r for r in a):
                t = [r for r in a if "train_async_vs_none" in r]
                hid = "-".join(str(h) for h in t[0]["train_hidden"])
                n, sy_, asy = med(t, "train_none_s"), med(t, "train_sync_s"), med(t, "train_async_s")
                ra, rs = med(t, "train_async_vs_none"), med(t, "train_sync_vs_none")
                desc = (f"mlp 784-{hid}-10, {t[0]['train_bytes'] / 1e6:.0f} MB checkpoint, "
                        f"{t[0]['train_iters']} iterations")
                row(f"training with async checkpoints / without ({desc})",
                    f"{fmt(asy, '.2f')} s / {fmt(n, '.2f')} s: {fmt(ra, '.3f')}", "<= 1.05 (issue)",
                    verdict_le(ra, 1.05, 3))
                row("training with sync checkpoints / without",
                    f"{fmt(sy_, '.2f')} s / {fmt(n, '.2f')} s: {fmt(rs, '.3f')}", "info", "")
                share = min(r.get("train_cpu_share", 1.0) for r in t)
                row("least CPU share per rank while training", f"{share:.2f}", "info (< 0.9: contended)", "")
        p("")
    if breakdown:
        p("### Where a 1-process save/load spends its time (median seconds)\n")
        p("| step | s | GB/s |")
        p("|---|---|---|")
        b = breakdown[-1]
        for name, v in sorted(b["seconds"].items()):
            m = statistics.median(v)
            p(f"| {name} | {m:.3f} | {b['bytes'] / m / 1e9:.2f} |")
        p("")
    for b in loader:
        p(f"### Data loader: dtrain_loader_bench ({b['rounds']} rounds, malloc {b.get('malloc', '?')}, "
          f"batch {b['batch']}, crop padding {b['padding']} + flip; medians, samples/s)\n")
        p("| figure | workers | dtrain | torch DataLoader | dtrain/torch (median of rounds) | "
          "per round | goal |")
        p("|---|---|---|---|---|---|---|")
        names = {"loader": "loader alone", "train": "cnn training fed by it",
                 "compute": "cnn training on one batch in memory (model's limit)",
                 "bare": "bare LibTorch step loop (dtrain, no trainer)"}
        for r in b["summary"]:
            has_peer = r["ratio"] > 0
            goal = ">= 1 (issue)" if r["part"] in ("loader", "train") else "info"
            p(f"| {names.get(r['part'], r['part'])} | {r['workers'] if r['part'] != 'compute' and r['part'] != 'bare' else '-'} "
              f"| {r['dtrain_samples_per_s']:.0f} | "
              f"{format(r['torch_samples_per_s'], '.0f') if has_peer else 'n/a'} | "
              f"{format(r['ratio'], '.2f') if has_peer else 'n/a'} | "
              f"{' '.join(format(x, '.2f') for x in r['ratios'])} | "
              f"{goal} {verdict(r['ratio'], 1.0) if has_peer and goal != 'info' else ''} |")
        p(f"| references: memcpy of a batch | - | {b['memcpy_samples_per_s']:.0f} | | | | |")
        p(f"| get_batch without augmentation (inline) | - | {b['get_batch_samples_per_s']:.0f} | | | | |")
        p(f"| Augmenter::apply alone (inline) | - | {b['batch'] / b['augment_s_per_batch']:.0f} | | | | |")
        p("")
    local = [r for r in rows if r.get("bench") == "local"]
    if local:
        p("### Node-local snapshots: dtrain_local_bench (training time with a local snapshot every "
          "5 steps / every step, against none; medians of rounds)\n")
        p("| ranks | state / rank's shard | step | memcpy of the shard | every 5 / none (bound) | goal | "
          "every step / none (bound) | goal | stall / memcpy | goal | resume local / persistent (cold) |")
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in local:
            heavy = r["memcpy_s"] > 0.03 * r["step_s"]
            goal1 = 1.0 + 1.5 * (r["bound1"] - 1.0) if heavy else 1.05
            p(f"| {r['world']} | {r['state_bytes'] / 1e6:.1f} MB / {r['shard_bytes'] / 1e6:.1f} MB | "
              f"{r['step_s']:.4f} s | {r['memcpy_s']:.4f} s | {r['every5_vs_none']:.3f} ({r['bound5']:.3f}) | "
              f"<= 1.02 {verdict_le(r['every5_vs_none'], 1.02, 3)} | "
              f"{r['every1_vs_none']:.3f} ({r['bound1']:.3f}) | <= {goal1:.3f} "
              f"{verdict_le(r['every1_vs_none'], goal1, 3)} | {r['stall_vs_memcpy']:.2f} | "
              f"<= 1.5 {verdict_le(r['stall_vs_memcpy'], 1.5)} | "
              f"{r['resume_local_s']:.3f} s / {r['resume_persistent_s']:.3f} s |")
        p("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
