"""The whole method as one recipe: generate -> index -> (tiny: tokenizer, base) -> CPT -> teacher trajectories
-> SFT (agent and CoT) -> evaluation table.

    from minagent.microdomain.pipeline import run_recipe
    table = run_recipe("tiny", work="runs/tiny")          # what `python train.py` runs

Each stage writes into its own directory under `work` and finishes by writing `stage.json` with a key: the
hash of its settings and of its inputs' keys. A stage whose key is unchanged is skipped, so a second run only
re-does what changed (and everything downstream of it). A training stage that was interrupted resumes from its
last checkpoint when its key is the same (the key is written to `stage.key` before it starts).

Stages (directories):
  domain/     manual/ (the product's manual), exam.jsonl, train.jsonl, heldout.jsonl, domain.json
  general/    tiny tier only: a second product, the base model's "general knowledge"
  index/      bm25/: the BM25 index of manual/ (what `infer.py exam --index` takes)
  tokenizer/  tiny tier only: SentencePiece tokenizer trained on both manuals + a random model
  pretrain/, instruct/   tiny tier only: the base model (LM on the general manual, then QA / RAG QA on it)
  teacher/    trajectories.jsonl (kept, no held-out name in them; a share run with the extractor in the loop),
              sft_agent.jsonl (+ extractor examples), sft_cot.jsonl (CoT traces), distill counts
  cpt/, sft/, cot/   training runs; the model is <stage>/run/final/model
  eval/       one results JSONL per system, results.csv, results.png, table.md
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import shutil
import time
from pathlib import Path

from ..agent.executor import Agent, AgentConfig
from ..agent.extractor import ContextExtractor
from ..agent.teacher import distill
from ..agent.tools import make_search
from ..jsonl import read_jsonl
from . import formats
from .domain import PRODUCTS, make_domain, write_manual
from .evaluate import System, evaluate_system, format_table, write_csv
from .exam import heldout_names, make_exam, write_jsonl
from .oracle import cot_trace, extractor_examples, oracle_llm
from .tiers import tier_settings


RECIPE_VERSION = 6  # bump when a stage's code changes what it writes: every cached stage is then redone
                    # (2: CoT traces filtered for held-out names too; 4: multiple-choice options a guess cannot
                    # rule out, and parse_reply's last "Answer:" on a line; 6: a share of the teacher's runs
                    # with the extractor in the loop)


def _key(obj) -> str:
    return hashlib.sha256(json.dumps({"v": RECIPE_VERSION, **obj}, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """Runs stages with output caching keyed by their inputs."""

    def __init__(self, work, log=print, force: bool = False):
        self.work, self.log, self.force = Path(work), log, force
        self.keys: dict[str, str] = {}

    def run(self, name: str, inputs: dict, build, resumable: bool = False, keep_previous: bool = False) -> Path:
        """keep_previous: a finished output that the new inputs replace is moved to `<name>.previous/` (one
        generation) instead of deleted: a rerun with a typo'd --teacher URL must not wipe hours of a real
        teacher's trajectories before it finds out the URL is wrong."""
        d = self.work / name
        key = _key({"stage": name, **inputs})
        self.keys[name] = key
        marker = d / "stage.json"
        if not self.force and marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("key") == key and _outputs_intact(d, done.get("files")):
                self.log(f"[{name}] up to date, skipped")
                return d
            if done.get("key") == key:
                self.log(f"[{name}] outputs missing or changed since the stage finished: running it again")
        pending = d / "stage.key"
        resume = resumable and pending.is_file() and pending.read_text().strip() == key
        if d.exists() and not resume:
            previous = d.with_name(name + ".previous")
            if keep_previous and marker.is_file():
                shutil.rmtree(previous, ignore_errors=True)
                d.rename(previous)
                self.log(f"[{name}] its earlier output (other inputs) is kept in {previous}")
            else:
                shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        pending.write_text(key)
        self.log(f"[{name}] {'resuming' if resume else 'running'}")
        t0 = time.monotonic()
        build(d, resume)
        seconds = time.monotonic() - t0
        self.log(f"[{name}] done in {seconds:.0f} s")
        tmp = d / "stage.json.tmp"
        tmp.write_text(json.dumps({"key": key, "inputs": inputs, "seconds": round(seconds, 1),
                                   "files": _output_sizes(d)}, indent=1, default=str))
        os.replace(tmp, marker)
        pending.unlink()
        return d


_MARKERS = {"stage.json", "stage.json.tmp", "stage.key"}


def _output_sizes(d: Path) -> dict:
    """{relative path: bytes} of what a stage wrote: checked before the stage is skipped, so a deleted or
    truncated output makes it run again instead of failing (or feeding a later stage) further on."""
    return {str(p.relative_to(d)): p.stat().st_size for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in _MARKERS}


def _outputs_intact(d: Path, files: dict | None) -> bool:
    if files is None:  # a marker written before the outputs were recorded: trust it, as before
        return True
    for rel, size in files.items():
        p = d / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


# ---- data builders -------------------------------------------------------------------------------------------

def build_domain(d: Path, seed: int, settings: dict, product_index: int | None = None) -> dict:
    s = dict(settings)
    heldout = s.pop("heldout_fraction", 0.25)
    dom = make_domain(seed, product_index=product_index, **s)
    write_manual(dom, d / "manual")
    items = make_exam(dom, heldout, seed)
    write_jsonl(items, d / "exam.jsonl")
    write_jsonl([i for i in items if i["split"] == "train"], d / "train.jsonl")
    write_jsonl([i for i in items if i["split"] == "heldout"], d / "heldout.jsonl")
    (d / "domain.json").write_text(json.dumps(dom.to_dict(), indent=1))
    return {"domain": dom, "items": items}


def load_domain(d: Path):
    from .domain import Command, Domain, Message, Parameter
    raw = json.loads((d / "domain.json").read_text())
    dom = Domain(**{k: v for k, v in raw.items() if k not in ("parameters", "messages", "commands")})
    dom.parameters = [Parameter(**p) for p in raw["parameters"]]
    dom.messages = [Message(**m) for m in raw["messages"]]
    dom.commands = [Command(**c) for c in raw["commands"]]
    items = [json.loads(line) for line in (d / "exam.jsonl").read_text().splitlines() if line.strip()]
    return dom, items


def build_index_dir(manual: Path, stage_dir: Path):
    from ..retrieval import build_index
    build_index(manual, stage_dir / "bm25")


def searcher(stage_dir: Path, k: int):
    from ..retrieval import load_index
    return make_search(load_index(stage_dir / "bm25"), default_k=k)


def instruct_examples(items: list[dict], search) -> list[dict]:
    """The base model's instruction data: closed-book and RAG question answering on the general product (RAG
    only where the retrieved passages hold every evidence entry: it learns to read, not to guess)."""
    out = []
    for it in items:
        out.append({"messages": formats.closed_book_messages(it) +
                    [{"role": "assistant", "content": formats.gold_reply(it)}]})
        passages = search(it["question"])
        if all(e in passages for e in it["evidence"]):
            out.append({"messages": formats.rag_messages(it, passages) +
                        [{"role": "assistant", "content": formats.gold_reply(it)}]})
    return out


def pretrain_corpus(manual: Path, manual_repeats: int) -> list[dict]:
    """The tiny base model's pretraining documents: the general product's manual, repeated."""
    from ..retrieval.documents import list_corpus_files, read_document
    docs = [read_document(p, src).text for p, src in list_corpus_files(manual)]
    return [{"text": t} for _ in range(manual_repeats) for t in docs]


def make_trajectories(d: Path, dom, items, search, teacher: str | None, max_train: int | None = None,
                      extractor_every: int = 1, log=print) -> dict:
    """Teacher trajectories on the train questions, filtered for held-out names; CoT traces; and the extractor's
    data (extractor_every 0: none): examples from every `extractor_every`-th kept trajectory, and every
    `extractor_every`-th train question run a second time with the extractor in the loop. A student that only
    ever saw whole passages as observations does not know what to do after "Relevant text from the passages:"
    (trained without those runs, the extractor row scored 30% where the agent scored 90%, two-hop questions
    0%), so the student that is evaluated with the extractor also learns to act on extracts."""
    train = [i for i in items if i["split"] == "train"]
    if max_train is not None:  # a fair sample of every question type, not the first entity kind
        random.Random(0).shuffle(train)
        train = train[:max_train]
    system = lambda mc: formats.agent_system(dom.product, mc)  # noqa: E731
    if teacher:
        from ..agent.llm import HTTPChatLLM
        llm = HTTPChatLLM(teacher, log=log)
        ftp = llm
    else:
        llm, ftp = oracle_llm(dom, items), None
    config = AgentConfig(max_steps=5, max_tokens=512)
    agent = Agent(llm, {"search": search}, config, system=system)
    counts = distill(train, agent, d / "distilled.jsonl", ftp_llm=ftp, log=None)
    if extractor_every:  # (min_chars 0: the recipe's students condense every search result, see _evaluate)
        extracting = Agent(llm, {"search": search}, config, system=system,
                           extractor=ContextExtractor(llm, min_chars=0))
        extracted = distill(train[::extractor_every], extracting, d / "distilled_extractor.jsonl", ftp_llm=ftp,
                            log=None)
        counts.update({f"extractor_runs_{k}": v for k, v in extracted.items()})
    held = heldout_names(dom, items)
    by_id = {i["id"]: i for i in items}
    kept, leaked, extra, runs_with_extracts = [], 0, [], []
    sources = [("distilled.jsonl", False)] + ([("distilled_extractor.jsonl", True)] if extractor_every else [])
    for name, with_extracts in sources:
        rows, _ = read_jsonl(d / name, lambda row: row)  # (a bad line is named, file:line)
        for _, row in rows:
            text = json.dumps(row["messages"])
            if any(h in text for h in held):
                leaked += 1
                continue
            if with_extracts:  # (its own id: the same question's plain run is a different example)
                runs_with_extracts.append({"id": f"{row['id']}/extractor", "messages": row["messages"]})
                continue
            kept.append({"id": row["id"], "messages": row["messages"]})
            if extractor_every and len(kept) % extractor_every == 0:
                extra += extractor_examples(row, by_id[row["id"]])
    write_jsonl(kept + runs_with_extracts, d / "trajectories.jsonl")
    write_jsonl(kept + runs_with_extracts + extra, d / "sft_agent.jsonl")
    if teacher:
        cot = _teacher_cot(llm, train)
    else:
        cot = [{"id": it["id"], "messages": formats.cot_messages(it) +
                [{"role": "assistant", "content": cot_trace(dom, it)}]} for it in train]
    # the same filter as the trajectories: a train question's options may name held-out entities
    cot_kept = [row for row in cot if not any(h in json.dumps(row["messages"]) for h in held)]
    write_jsonl(cot_kept, d / "sft_cot.jsonl")
    counts.update(leaked=leaked, trajectories=len(kept), trajectories_with_extracts=len(runs_with_extracts),
                  extractor_examples=len(extra), cot=len(cot_kept),
                  cot_leaked=len(cot) - len(cot_kept))
    (d / "counts.json").write_text(json.dumps(counts, indent=1))
    log(f"[teacher] {counts}")
    return counts


def _teacher_cot(llm, items) -> list[dict]:
    from ..agent.multiple_choice import is_correct
    out = []
    for it in items:
        msgs = formats.cot_messages(it)
        reply = llm.complete(msgs, max_tokens=512, session="cot")[0]
        if is_correct(formats.parse_reply(reply, cot=True), it):
            out.append({"id": it["id"], "messages": msgs + [{"role": "assistant", "content": reply.strip()}]})
    return out


def train_stage(d: Path, resume: bool, model: Path, data: Path, settings: dict, seed: int, progress: bool) -> Path:
    from ..training import TrainConfig, train
    cfg = TrainConfig(**{**settings, "model": str(model), "data": str(data), "out": str(d / "run"),
                         "resume": resume, "seed": seed, "progress": progress,
                         "cache_dir": str(d / "token-cache")})
    train(cfg)
    return d / "run" / "final" / "model"


def model_of(stage_dir: Path) -> Path:
    return stage_dir / "run" / "final" / "model"


# ---- the recipe ------------------------------------------------------------------------------------------------

SYSTEMS = [
    System("base closed-book", "base", "closed-book"),
    System("base + RAG", "base", "rag"),
    System("CPT only", "cpt", "closed-book"),
    System("CoT-distilled", "cot", "cot"),
    System("agent-distilled", "agent", "agent"),
    System("agent-distilled + SAG", "agent", "agent", sag=1),  # sag set from the tier
    System("agent-distilled + extractor", "agent", "agent", extractor=True),
]


def run_recipe(tier: str = "tiny", work: str | Path = "runs/tiny", seed: int = 0, teacher: str | None = None,
               base_model: str | Path | None = None, overrides: dict | None = None, progress: bool = True,
               log=print, force: bool = False) -> dict:
    """Run (or resume, or skip what is cached) the whole recipe; returns {"table", "results", "work"}."""
    s = tier_settings(tier, overrides)
    if base_model is not None and "shape" in s:  # (refused now, not silently replaced by the tier's own base)
        raise ValueError(f"--base-model {base_model}: the {tier} tier trains its own base model from scratch; "
                         "--base-model is for the smollm2 tier")
    names = [x.name for x in SYSTEMS]
    wanted = s["eval"].get("systems")
    if wanted is not None and (not isinstance(wanted, list) or not wanted or any(w not in names for w in wanted)):
        # a misspelt name used to drop its row (and the training it needs) without a word
        raise ValueError(f"--set eval.systems={json.dumps(wanted)}: expected a non-empty JSON list of system "
                         f"names from {json.dumps(names)}")
    work = Path(work)
    if work.exists() and not work.is_dir():
        raise ValueError(f"--work {work}: a file is there; --work names the recipe's working directory")
    st = Stages(work, log, force)
    target_product = seed % len(PRODUCTS)

    st.run("domain", {"seed": seed, **s["domain"]}, lambda d, r: build_domain(d, seed, s["domain"], target_product))
    dom, items = load_domain(work / "domain")
    st.run("index", {"domain": st.keys["domain"]}, lambda d, r: build_index_dir(work / "domain" / "manual", d))
    search = searcher(work / "index", s["search"]["k"])

    if "shape" in s:  # tiny: tokenizer, random init, base model from the general product
        base = _tiny_base(st, s, work, seed, target_product, progress, log)
    else:
        if base_model is None:  # fetched (and converted) on first use, then cached
            from ..fetch import fetch_smollm2
            base_model = fetch_smollm2("models")
        base = Path(base_model)
        if not (base / "config.json").is_file():
            raise FileNotFoundError(f"{base}: no checkpoint (run `python infer.py fetch` or pass --base-model)")
        st.keys["base"] = _key({"path": str(base.resolve()), "mtime": (base / "config.json").stat().st_mtime})

    teacher_inputs = {"domain": st.keys["domain"], "index": st.keys["index"], "teacher": teacher,
                      "k": s["search"]["k"], **s.get("teacher", {})}
    # resumable: distill() appends each question's run as it comes and skips those already in the file, so an
    # interrupted teacher stage (a --teacher server that went away) keeps the trajectories it had paid for
    st.run("teacher", teacher_inputs, lambda d, r: make_trajectories(
        d, dom, items, search, teacher, s.get("teacher", {}).get("max_train"),
        s.get("teacher", {}).get("extractor_every", 1), log), resumable=True, keep_previous=True)

    st.run("cpt", {"base": st.keys["base"], "domain": st.keys["domain"], **s["cpt"]},
           lambda d, r: train_stage(d, r, base, work / "domain" / "manual", s["cpt"], seed, progress),
           resumable=True)
    needed = {x.model for x in SYSTEMS if wanted is None or x.name in wanted}
    for name, data in (("sft", "sft_agent.jsonl"), ("cot", "sft_cot.jsonl")):
        if {"sft": "agent", "cot": "cot"}[name] not in needed:
            continue
        st.run(name, {"cpt": st.keys["cpt"], "teacher": st.keys["teacher"], **s[name]},
               lambda d, r, data=data, name=name: train_stage(d, r, model_of(work / "cpt"), work / "teacher" / data,
                                                              s[name], seed, progress), resumable=True)

    models = {"base": base, "cpt": model_of(work / "cpt"), "cot": model_of(work / "cot"),
              "agent": model_of(work / "sft")}
    model_keys = {"base": st.keys["base"], "cpt": st.keys["cpt"], "cot": st.keys.get("cot"),
                  "agent": st.keys.get("sft")}
    heldout = [i for i in items if i["split"] == "heldout"]
    random.Random(seed).shuffle(heldout)  # a prefix of it is then a fair sample of every question type
    heldout = heldout[:s["eval"]["max_heldout"]]
    results = []
    for system in SYSTEMS:
        if wanted is not None and system.name not in wanted:
            continue
        if system.sag:
            system = System(system.name, system.model, system.mode, sag=s["eval"]["sag"])
        # which systems run and how many questions the ablations get decide what runs, not what a run computes
        settings = {k: v for k, v in s["eval"].items() if k not in ("systems", "ablation_heldout")}
        inputs = {"system": system.__dict__, "model": model_keys[system.model], "index": st.keys["index"],
                  "eval": settings, "k": s["search"]["k"]}
        stage = f"eval/{system.name.replace(' ', '_').replace('+', 'plus')}"
        # SAG (N samples a step) and the extractor (an extra pass per search) cost several times a plain run:
        # on CPU they are measured on the first `ablation_heldout` questions (the table shows each row's n)
        subset = heldout[:s["eval"].get("ablation_heldout")] if system.sag or system.extractor else heldout
        inputs["n"] = len(subset)
        d = st.run(stage, inputs, lambda d, r, system=system, subset=subset: _evaluate(
            d, system, models[system.model], dom, subset, search, s["eval"], progress))
        results.append((system.name, json.loads((d / "scores.json").read_text())))
    (work / "eval" / "agent_system.txt").write_text(formats.agent_system(dom.product) + "\n")
    if "agent" in needed:
        (work / "eval" / "exam_command.txt").write_text(exam_command_line(work, s) + "\n")
    title = (f"Held-out exam accuracy (%), tier {tier}, {dom.product}, {len(heldout)} questions "
             f"({sum(i['hops'] == 2 for i in heldout)} two-hop, {sum(bool(i.get('choices')) for i in heldout)} "
             f"multiple-choice)")
    table = format_table(results, title)
    out = work / "eval"
    (out / "table.md").write_text(table + "\n")
    write_csv(results, out / "results.csv")
    try:
        from .chart import bar_chart_png
        bar_chart_png([n for n, _ in results], [100 * r["accuracy"] for _, r in results], out / "results.png",
                      title=f"{dom.product}: held-out accuracy ({tier})")
    except ImportError:
        pass
    log(table)
    log(f"written: {out / 'table.md'}, {out / 'results.csv'}"
        + (f", {out / 'results.png'}" if (out / "results.png").is_file() else "")
        + (f"; to rerun the agent row by hand: {out / 'exam_command.txt'}" if "agent" in needed else ""))
    return {"table": table, "results": results, "work": work}


def exam_command_line(work: Path, s: dict) -> str:
    """The `infer.py exam` call that reruns the agent-distilled row by hand, on every held-out question: the
    student, the system prompt it was trained with, and the tier's search k, steps, tokens and context (the CLI's
    defaults differ, and a student trained on one-passage observations scores far lower when shown three)."""
    args = ["python", "infer.py", "exam", "--model", model_of(work / "sft"), "--exam", work / "domain" / "exam.jsonl",
            "--split", "heldout", "--index", work / "index" / "bm25", "--system-file",
            work / "eval" / "agent_system.txt", "--k", s["search"]["k"], "--max-steps", s["eval"]["max_steps"],
            "--max-tokens", s["eval"]["max_tokens"], "--max-len", s["eval"]["max_len"],
            "--out", work / "eval" / "by_hand.jsonl"]
    return shlex.join(str(a) for a in args)


def _evaluate(d: Path, system: System, model_dir: Path, dom, heldout, search, ev: dict, progress: bool):
    from ..agent.llm import MinagentLLM
    from ..chat import agent_settings
    from ..tokenizer import load_tokenizer
    from ..weights import load_model
    llm = MinagentLLM(load_model(model_dir), load_tokenizer(model_dir), max_len=ev["max_len"],
                      **agent_settings(model_dir))
    cfg = AgentConfig(max_steps=ev["max_steps"], max_tokens=ev["max_tokens"], seed=0)
    scores = evaluate_system(system, llm, heldout, d / "results.jsonl", search,
                             agent_system=lambda mc: formats.agent_system(dom.product, mc), agent_config=cfg,
                             progress=progress)
    (d / "scores.json").write_text(json.dumps(scores))


def _tiny_base(st: Stages, s: dict, work: Path, seed: int, target_product: int, progress: bool, log) -> Path:
    from .tiny import TinyShape, init_tiny_model, train_sentencepiece
    general_product = (target_product + 1) % len(PRODUCTS)
    g_seed = seed + 1000
    st.run("general", {"seed": g_seed, **s["general_domain"]},
           lambda d, r: build_domain(d, g_seed, s["general_domain"], general_product))
    st.run("general_index", {"general": st.keys["general"]},
           lambda d, r: build_index_dir(work / "general" / "manual", d))
    g_search = searcher(work / "general_index", s["search"]["k"])
    _, g_items = load_domain(work / "general")

    def tokenizer_and_init(d: Path, resume: bool):
        from ..retrieval.documents import list_corpus_files, read_document
        texts = []
        for root in (work / "general" / "manual", work / "domain" / "manual"):
            for path, source in list_corpus_files(root):
                texts.append(read_document(path, source).text)
        texts += [m["content"] for ex in instruct_examples(g_items[:200], g_search) for m in ex["messages"]]
        texts += [formats.agent_system(p) for p, _ in PRODUCTS] + [formats.COT_SYSTEM]
        train_sentencepiece(texts, d, s["tokenizer"]["vocab_size"], seed)
        from ..tokenizer import load_tokenizer
        tok = load_tokenizer(d)
        init_tiny_model(d, tok.vocab_size, tok.token_to_id("<s>"), tok.eos_token_id, TinyShape(**s["shape"]), seed)

    k = s["search"]["k"]  # (the instruct examples' observations are search results: k shapes the text)
    st.run("tokenizer", {"general": st.keys["general"], "domain": st.keys["domain"], "k": k, **s["tokenizer"],
                         **s["shape"]}, tokenizer_and_init)
    pre = dict(s["pretrain"])
    manual_repeats = pre.pop("manual_repeats", 1)

    def pretrain(d: Path, resume: bool):
        write_jsonl(pretrain_corpus(work / "general" / "manual", manual_repeats), d / "pretrain.jsonl")
        train_stage(d, resume, work / "tokenizer", d / "pretrain.jsonl", pre, seed, progress)

    st.run("pretrain", {"tokenizer": st.keys["tokenizer"], **s["pretrain"]}, pretrain, resumable=True)

    def instruct(d: Path, resume: bool):
        write_jsonl(instruct_examples(g_items, g_search), d / "instruct.jsonl")
        train_stage(d, resume, model_of(work / "pretrain"), d / "instruct.jsonl", s["instruct"], seed, progress)

    st.run("instruct", {"pretrain": st.keys["pretrain"], "general_index": st.keys["general_index"], "k": k,
                        **s["instruct"]}, instruct, resumable=True)
    st.keys["base"] = st.keys["instruct"]
    return model_of(work / "instruct")
