"""Retrieval benchmark: our BM25 vs bm25s (numpy, numba) and rank_bm25; our dense top-k vs faiss IndexFlatIP;
our MiniLM encoder vs sentence-transformers. One run, ratios printed (ours / theirs, > 1 means we are faster).

    python bench/retrieval.py                 # 10k and 100k synthetic passages, dense 100k x 384, encoder
    python bench/retrieval.py --sizes 10000   # quicker
    python bench/retrieval.py --skip-encoder --skip-dense

BM25: synthetic passages of 40-160 words drawn from a Zipf(1.1) vocabulary of 60k words (what real text looks
like to an index). "natural" queries draw 3-8 words from the same distribution (so they contain the very
common words); "rare" queries use words of frequency rank > 1000 only (stopword-free, what an agent searching
for a message ID or option name sends). Each system builds its index from the raw text with its own
tokenizer (all set to: lowercase, no stopwords, no stemming) in a forked child, which reports build time,
peak extra memory (max RSS minus RSS before the build) and then the query timings, so systems never share
memory or caches. Top-10, single thread (BLAS/OpenMP/numba/torch threads = 1 unless stated), one query at a
time and batched; best of 5 repeats, and ours and bm25s each run in 2 alternating children (--rounds),
the best reading kept. Our top-10 is checked against bm25s's on the same queries.

Times are process CPU seconds (time.process_time), not wall clock: on a shared machine the wall clock counts
other people's jobs. For the 2-thread dense rows CPU time adds both threads' time, so those rows use the wall
clock (the load average is printed: trust them only when it is below the core count).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse      # noqa: E402
import contextlib    # noqa: E402
import importlib.util  # noqa: E402
import json          # noqa: E402
import resource      # noqa: E402
import sys           # noqa: E402
import time          # noqa: E402

import numpy as np   # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minagent.retrieval.analyzer import Analyzer, TermIds   # noqa: E402
from minagent.retrieval.bm25 import BM25Index               # noqa: E402

K = 10


# -- helpers ----------------------------------------------------------------------------------------------------

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def in_child(fn):
    """Run fn() in a forked child; return its JSON-able result (or {"error": ...})."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = fn()
        except Exception as e:          # report, never kill the benchmark
            out = {"error": f"{type(e).__name__}: {e}"}
        with os.fdopen(w, "w") as f:
            json.dump(out, f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"error": "child died"}


CLOCK = time.process_time      # CPU seconds: on a shared machine, wall time measures the neighbours too


def best_of(fn, repeats=5):
    """Least CPU time of `repeats` runs (a query timing window is only ~50-300 ms: one slow spell of this shared
    machine can halve a single reading, for any system)."""
    best = float("inf")
    for _ in range(repeats):
        t = CLOCK()
        fn()
        best = min(best, CLOCK() - t)
    return max(best, 1e-9)


def wall_best_of(fn, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_build(build):
    """(object, seconds, peak extra bytes) for build() in this (child) process."""
    base = rss_bytes()
    t = CLOCK()
    obj = build()
    secs = CLOCK() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return obj, secs, peak


# -- synthetic corpus ---------------------------------------------------------------------------------------

def make_vocab(n, rng):
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words, seen = [], set()
    while len(words) < n:
        w = "".join(rng.choice(letters, rng.integers(3, 11)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def make_corpus(n_docs, vocab, rng):
    ranks = (rng.zipf(1.1, 200 * n_docs) - 1) % len(vocab)
    lengths = rng.integers(40, 161, n_docs)
    texts, pos = [], 0
    for n in lengths:
        texts.append(" ".join(vocab[i] for i in ranks[pos:pos + n]))
        pos += n
    return texts


def make_queries(vocab, rng, n, rare):
    out = []
    for _ in range(n):
        m = int(rng.integers(3, 9)) if not rare else int(rng.integers(2, 5))
        ids = rng.integers(1000, 20000, m) if rare else (rng.zipf(1.1, m) - 1) % len(vocab)
        out.append(" ".join(vocab[i] for i in ids))
    return out


# -- BM25 systems (each runs in its own child) -----------------------------------------------------------------

def run_ours(texts, queries):
    analyzer = Analyzer(stem=False)

    def build():
        ti = TermIds(analyzer)
        ti.add_texts(texts)
        flat, lengths = ti.arrays()
        return ti, BM25Index("lucene", k1=1.5, b=0.75).add(flat, lengths, len(ti.vocab))

    (ti, index), secs, peak = measure_build(build)
    out = {"build_s": secs, "peak_mb": peak / 2**20}
    for kind, qs in queries.items():
        out[f"{kind}_single"] = len(qs) / best_of(lambda: [index.topk(ti.query_ids(q), K) for q in qs])
        out[f"{kind}_batch"] = len(qs) / best_of(lambda: index.topk_batch([ti.query_ids(q) for q in qs], K))
        out[f"{kind}_top"] = [index.topk(ti.query_ids(q), K)[1].tolist() for q in qs[:20]]
    return out


def run_bm25s(texts, queries, numba):
    import bm25s

    def build():
        tok = bm25s.tokenize(texts, stopwords=None, show_progress=False)
        r = bm25s.BM25(method="lucene", k1=1.5, b=0.75, backend="numpy")
        r.index(tok, show_progress=False)
        return r

    index, secs, peak = measure_build(build)
    out = {"build_s": secs, "peak_mb": peak / 2**20}
    backends = [("numpy", "")] + ([("numba", "numba_")] if numba else [])
    for backend, prefix in backends:
        index.backend = backend
        if backend == "numba":
            index.activate_numba_scorer()
            index.retrieve([queries["natural"][0].split()], k=K, show_progress=False)   # JIT compile
        for kind, qs in queries.items():
            toks = [q.split() for q in qs]

            def single():
                for t in toks:
                    index.retrieve([t], k=K, show_progress=False, n_threads=0)

            def batch():
                index.retrieve(toks, k=K, show_progress=False, n_threads=0)
            out[f"{prefix}{kind}_single"] = len(qs) / best_of(single)
            out[f"{prefix}{kind}_batch"] = len(qs) / best_of(batch)
            if backend == "numpy":
                _, scores = index.retrieve(toks[:20], k=K, show_progress=False, n_threads=0)
                out[f"{kind}_top"] = scores.tolist()
    return out


def run_rank_bm25(texts, queries, n_queries):
    import rank_bm25

    index, secs, peak = measure_build(lambda: rank_bm25.BM25Okapi([t.split() for t in texts], k1=1.5, b=0.75))
    out = {"build_s": secs, "peak_mb": peak / 2**20}
    for kind, qs in queries.items():
        toks = [q.split() for q in qs[:n_queries]]
        t = best_of(lambda: [np.argpartition(-index.get_scores(q), K)[:K] for q in toks], repeats=1)
        out[f"{kind}_single"] = len(toks) / t
    return out


def _best_reading(old, new):
    """Merge two child runs' results: the faster build, the smaller peak, the higher q/s; errors win."""
    if old is None or "error" in new:
        return new
    if "error" in old:
        return old
    out = dict(old)
    for key, v in new.items():
        if isinstance(v, (int, float)) and key in out:
            out[key] = min(out[key], v) if key.endswith(("_s", "_mb")) else max(out[key], v)
    return out


def bench_bm25(n_docs, vocab, n_queries, rng, have, rounds=2):
    t = time.perf_counter()
    texts = make_corpus(n_docs, vocab, rng)
    queries = {"natural": make_queries(vocab, rng, n_queries, rare=False),
               "rare": make_queries(vocab, rng, n_queries, rare=True)}
    print(f"\n== BM25, {n_docs:,} passages ({sum(len(x) for x in texts) / 2**20:.0f} MB of text, "
          f"made in {time.perf_counter() - t:.1f}s), {n_queries} queries of each kind, top-{K}, 1 thread ==")
    # ours and bm25s alternate over `rounds` child runs (ours first, then bm25s first, ...), and each keeps its
    # best reading: a slow spell of this shared machine during one child used to decide a ratio by itself
    runners = {"ours": lambda: run_ours(texts, queries)}
    if have["bm25s"]:
        runners["bm25s"] = lambda: run_bm25s(texts, queries, have["numba"])
    res = {}
    for r in range(rounds):
        for name in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
            res[name] = _best_reading(res.get(name), in_child(runners[name]))
    if have["rank_bm25"]:
        res["rank_bm25"] = in_child(lambda: run_rank_bm25(texts, queries, 10 if n_docs > 20000 else 30))
    for name, r in res.items():
        if "error" in r:
            print(f"  {name}: FAILED {r['error']}")
    ours = res["ours"]
    rows = [("build seconds (lower is better)", "build_s", True), ("build peak MB", "peak_mb", True)]
    for kind in ("natural", "rare"):
        rows += [(f"{kind} q/s, one at a time", f"{kind}_single", False),
                 (f"{kind} q/s, batched", f"{kind}_batch", False)]
    print(f"  (CPU seconds; load average now {os.getloadavg()[0]:.1f})")
    print(f"  {'':34s} {'ours':>10s} {'bm25s-np':>10s} {'bm25s-nb':>10s} {'rank_bm25':>10s}"
          "   ours/np  ours/nb  ours/rank")
    for label, key, lower in rows:
        b = res.get("bm25s", {})
        vals = [ours.get(key), b.get(key), b.get("numba_" + key) if not key.endswith(("_s", "_mb")) else None,
                res.get("rank_bm25", {}).get(key)]
        cells = " ".join(f"{v:10.1f}" if isinstance(v, (int, float)) else f"{'-':>10s}" for v in vals)
        ratios = []
        for other in vals[1:]:
            if isinstance(other, (int, float)) and isinstance(vals[0], (int, float)) and other and vals[0]:
                ratios.append(f"{(other / vals[0]) if lower else (vals[0] / other):8.2f}x")
            else:
                ratios.append(f"{'-':>9s}")
        print(f"  {label:34s} {cells}  {' '.join(ratios)}")
    if "bm25s" in res and "error" not in res["bm25s"]:
        for kind in ("natural", "rare"):
            same = sum(len(a) == len(b) and np.allclose(a, b, rtol=1e-5)
                       for a, b in zip(ours[f"{kind}_top"], res["bm25s"][f"{kind}_top"]))
            print(f"  top-{K} scores equal to bm25s's on {same}/20 {kind} queries (same passages up to ties)")
    print("  (ratios: ours/theirs for q/s; theirs/ours for seconds and MB — > 1 means ours is better)")
    return res


# -- dense ------------------------------------------------------------------------------------------------------

def bench_dense(n, dim, have):
    import torch

    from minagent.retrieval.dense import DenseIndex
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    q = rng.standard_normal((1000, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    singles = q[:50]
    print(f"\n== dense top-{K}, {n:,} x {dim} float32 (inner product), 50 single queries / 1000 batched ==")
    print(f"  load average {os.getloadavg()[0]:.1f} (faiss's 2-thread path suffers most on a shared machine); "
          "fp16 stores half the bytes with a shortlist: not faiss's exact fp32 work")
    ours32, ours16 = DenseIndex(dim).add(base), DenseIndex(dim, "float16").add(base)
    faiss_ix = None
    if have["faiss"]:
        import faiss
        faiss_ix = faiss.IndexFlatIP(dim)
        faiss_ix.add(base)
        fi = faiss_ix.search(q[:50], K)[1]
        oi = ours32.search(q[:50], K)[0]
        print(f"  top-{K} identical to faiss on {int((fi == oi).all(1).sum())}/50 queries")
    print(f"  {'':22s} {'ours fp32':>10s} {'ours fp16':>10s} {'faiss':>10s}   fp32/faiss fp16/faiss"
          "   fp32/faiss's best so far")
    faiss_best = {}
    for threads in (1, 2):
        if threads > 1 and importlib.util.find_spec("threadpoolctl") is None:
            print("  (2-thread rows skipped: threadpoolctl is not installed, so numpy's BLAS would stay on one "
                  "thread against faiss's two)")
            break
        torch.set_num_threads(threads)
        if faiss_ix is not None:
            faiss.omp_set_num_threads(threads)
        with blas_threads(threads):
            dense_rows(threads, singles, q, ours32, ours16, faiss_ix, faiss_best)
    torch.set_num_threads(1)


def blas_threads(n):
    """numpy's BLAS threads (our dense matmuls run there), through threadpoolctl. Without it numpy stays on the
    one thread the script pins (OPENBLAS_NUM_THREADS=1): fine for n = 1, and bench_dense skips the 2-thread rows."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=n)


def dense_rows(threads, singles, q, ours32, ours16, faiss_ix, faiss_best, rounds=4):
    """One table row per query mode: ours fp32, ours fp16 and faiss q/s with `threads` threads. The three are
    timed in interleaved rounds (best of `rounds`), so a slow spell of the machine hits all of them. The last
    column divides by faiss's best reading at any thread count so far (faiss's 2-thread single query can be
    slower than its 1-thread one: ours should beat its best, not its worst)."""
    clock = CLOCK if threads == 1 else time.perf_counter
    for label, qs, single in (("single", singles, True), ("batch", q, False)):
        def ours_run(ix):
            if single:
                return lambda: [ix.search(v, K) for v in qs]
            return lambda: ix.search(qs, K)
        runs = [ours_run(ours32), ours_run(ours16)]
        if faiss_ix is not None:
            if single:
                runs.append(lambda: [faiss_ix.search(v[None], K) for v in qs])
            else:
                runs.append(lambda: faiss_ix.search(qs, K))
        best = [float("inf")] * len(runs)
        for run in runs:
            run()                                   # warm-up
        for _ in range(rounds):
            for i, run in enumerate(runs):
                t = clock()
                run()
                best[i] = min(best[i], clock() - t)
        vals = [len(qs) / max(b, 1e-9) for b in best]
        cells = " ".join(f"{v:10.1f}" for v in vals)
        ratio = ""
        if len(vals) == 3:
            faiss_best[label] = max(faiss_best.get(label, 0.0), vals[2])
            ratio = (f"   {vals[0] / vals[2]:8.2f}x  {vals[1] / vals[2]:8.2f}x"
                     f"   {vals[0] / faiss_best[label]:8.2f}x")
        print(f"  {threads} thread {label + ' q/s':13s} {cells}{ratio}")


# -- encoder ----------------------------------------------------------------------------------------------------

def encoder_texts(n):
    doc = "/usr/share/doc/git-doc"
    if os.path.isdir(doc):
        from minagent.retrieval.chunker import chunk_corpus
        passages, _ = chunk_corpus(doc, progress=False)
        step = max(1, len(passages) // n)
        return [p.index_text() for p in passages[::step][:n]], "git-doc passages"
    rng = np.random.default_rng(1)
    vocab = make_vocab(5000, rng)
    return [" ".join(vocab[i] for i in rng.integers(0, 5000, rng.integers(10, 200))) for _ in range(n)], "synthetic"


def bench_encoder(n, threads, have):
    """Texts/s of our encoder and sentence-transformers, same texts, alternating runs (best of 2)."""
    import torch

    from minagent.retrieval.encoder import SentenceEncoder
    torch.set_num_threads(threads)
    texts, what = encoder_texts(n)
    ours = SentenceEncoder()
    timer = best_of if threads == 1 else wall_best_of
    print(f"\n== encoder all-MiniLM-L6-v2, {len(texts)} {what} (max 256 tokens), batch 32, {threads} thread(s) ==")
    ours.encode(texts[:8])
    st = None
    if have["sentence_transformers"]:
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(ours.model_dir, device="cpu")
        st.encode(texts[:8])
    # ours at its default (batch 32: its passes are capped at MAX_TOKENS_PER_PASS padded tokens); ST at batch 32
    # (same setting) and at batch 8 (its fastest here), so the cap's gain is not mistaken for a different setting
    t_ours, t_st = float("inf"), {32: float("inf"), 8: float("inf")}
    for _ in range(2):
        t_ours = min(t_ours, timer(lambda: ours.encode(texts), repeats=1))
        if st is not None:
            for bs in t_st:
                t_st[bs] = min(t_st[bs], timer(lambda: st.encode(texts, batch_size=bs), repeats=1))
    line = f"  ours {len(texts) / t_ours:8.1f} texts/s"
    if st is not None:
        a, b = ours.encode(texts[:32]), st.encode(texts[:32])
        line += (f"   sentence-transformers batch 32 {len(texts) / t_st[32]:8.1f} texts/s, batch 8 "
                 f"{len(texts) / t_st[8]:8.1f}   ours/st {t_st[32] / t_ours:.2f}x (vs its batch 8: "
                 f"{t_st[8] / t_ours:.2f}x)   min cosine {float((a * b).sum(1).min()):.6f}")
    print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated passage counts for BM25")
    ap.add_argument("--queries", type=int, default=200, help="queries of each kind")
    ap.add_argument("--dense-n", type=int, default=100000)
    ap.add_argument("--encoder-texts", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="child runs per BM25 system (best reading kept)")
    ap.add_argument("--skip-bm25", action="store_true")
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--skip-encoder", action="store_true")
    args = ap.parse_args()

    have = {m: importlib.util.find_spec(m) is not None
            for m in ("bm25s", "rank_bm25", "numba", "faiss", "sentence_transformers")}
    missing = [m for m, ok in have.items() if not ok]
    print(f"retrieval benchmark — oracles missing (skipped): {', '.join(missing) or 'none'}; "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    if not args.skip_bm25:
        rng = np.random.default_rng(42)
        vocab = make_vocab(60000, rng)
        for n in (int(s) for s in args.sizes.split(",") if s):
            bench_bm25(n, vocab, args.queries, rng, have, args.rounds)
    if not args.skip_dense:
        bench_dense(args.dense_n, 384, have)
    if not args.skip_encoder:
        try:
            bench_encoder(args.encoder_texts, 1, have)
        except FileNotFoundError as e:
            print(f"\n== encoder skipped: {e}")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
