"""A synthetic microdomain: a fictional middleware product whose manual no model has ever read.

The seed paper fine-tunes on a proprietary product (Hitachi JP1). We cannot ship one, so `make_domain(seed)`
invents one, deterministically: configuration parameters (default, range, unit, purpose), message IDs such as
`KIS4821-E` (meaning and a corrective action that names a parameter: the second hop of two-hop questions) and
CLI commands with options. `write_manual` writes it out the way real manuals come: parameters as HTML pages (one
per component, tables kept), messages as Markdown, commands as plain text with underlined headings — one
heading per fact-bearing entry, so the chunker returns one entry per passage.

Every fact is random (defaults, ranges, which parameter a message names, which option does what), so nothing
about it can be known without reading the manual, and two seeds give two unrelated products (the `tiny` tier
uses a second product as the "general" knowledge of its from-scratch base model).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

COMPONENTS = ["relay", "spool", "audit", "broker", "gateway", "scheduler", "ledger", "mailbox", "tracker",
              "archive", "monitor", "router", "dispatcher", "replica", "journal", "vault", "catalog", "beacon",
              "courier", "harbor", "sentry", "pipeline", "registry", "collector"]

# attribute: (unit, purpose with {c} = component, candidate values)
ATTRIBUTES = {
    "timeout": ("seconds", "how long the {c} waits for a reply before it gives up", [5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600]),
    "retry_limit": ("attempts", "how many times the {c} retries a failed operation", [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20]),
    "buffer_size": ("KB", "the size of the {c} receive buffer", [64, 128, 256, 512, 1024, 2048, 4096, 8192]),
    "max_connections": ("connections", "the largest number of clients the {c} serves at once", [8, 16, 32, 50, 64, 100, 128, 200, 256, 500]),
    "queue_depth": ("messages", "how many messages the {c} holds before it rejects new ones", [100, 200, 250, 500, 1000, 2000, 5000, 10000]),
    "flush_interval": ("milliseconds", "how often the {c} writes pending data to disk", [50, 100, 200, 250, 500, 750, 1000, 2000]),
    "cache_size": ("MB", "the memory the {c} uses to cache lookups", [16, 32, 48, 64, 96, 128, 256, 512]),
    "worker_count": ("threads", "how many worker threads the {c} starts", [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]),
    "heartbeat_interval": ("seconds", "how often the {c} tells its peers it is alive", [1, 2, 3, 5, 10, 15, 20, 30]),
    "alert_threshold": ("percent", "the usage above which the {c} raises a warning", [50, 60, 70, 75, 80, 85, 90, 95]),
}

# problem a message reports, by the attribute its corrective action raises
PROBLEMS = {
    "timeout": "did not get a reply from its peer in time",
    "retry_limit": "gave up after repeated failures",
    "buffer_size": "received a frame larger than its buffer",
    "max_connections": "refused a client because all connection slots were in use",
    "queue_depth": "rejected a message because its queue was full",
    "flush_interval": "fell behind writing pending data to disk",
    "cache_size": "evicted lookups faster than it could reload them",
    "worker_count": "could not start a task because every worker thread was busy",
    "heartbeat_interval": "flooded the network with heartbeats",
    "alert_threshold": "raised too many usage warnings",
}

VERBS = ["restart", "drain", "purge", "inspect", "suspend", "resume", "export", "verify", "rotate", "reload"]
FLAGS = ["--force", "--dry-run", "--all", "--wait", "--verbose", "--keep-logs", "--quiet", "--no-restart",
         "--output", "--since", "--limit", "--batch"]
FLAG_MEANINGS = ["skip the confirmation prompt", "show what would change without changing anything",
                 "include stopped instances", "block until the operation has finished",
                 "print one line per processed message", "keep the log files of the old instance",
                 "print nothing but errors", "leave the component stopped afterwards",
                 "write the report to a file", "process only entries newer than a date",
                 "stop after a number of entries", "handle entries in groups"]


@dataclass
class Parameter:
    name: str
    component: str
    attribute: str
    default: int
    low: int
    high: int
    unit: str
    purpose: str


@dataclass
class Message:
    id: str
    component: str
    severity: str
    meaning: str
    parameter: str       # the parameter its corrective action tells you to increase
    command: str         # the command to run afterwards


@dataclass
class Command:
    name: str            # "kisctl drain relay"
    purpose: str
    options: dict        # flag -> meaning


@dataclass
class Domain:
    product: str
    prefix: str          # message-ID prefix, e.g. "KIS"
    cli: str             # e.g. "kisctl"
    config_file: str
    seed: int
    parameters: list[Parameter] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def parameter(self, name: str) -> Parameter:
        return next(p for p in self.parameters if p.name == name)


PRODUCTS = [("Kestrel Integration Server", "KIS"), ("Osprey Job Scheduler", "OJS"), ("Heron Data Bus", "HDB"),
            ("Plover Transfer Manager", "PTM"), ("Avocet Event Hub", "AEH"), ("Curlew File Gateway", "CFG")]
SEVERITY = {"E": "error", "W": "warning"}


def make_domain(seed: int = 0, n_parameters: int = 120, n_messages: int = 80, n_commands: int = 24,
                product_index: int | None = None) -> Domain:
    """A product with the given number of entries; the same arguments always give the same product."""
    rng = random.Random(seed)
    product, prefix = PRODUCTS[product_index if product_index is not None else seed % len(PRODUCTS)]
    d = Domain(product, prefix, prefix.lower() + "ctl", prefix.lower() + ".conf", seed)
    combos = [(c, a) for c in COMPONENTS for a in ATTRIBUTES]
    ids = range(1000, 10000)
    # asked for more than there are, the slices below would quietly give fewer (or, negative, nearly all)
    # (4 parameters at least: a "which parameter" question offers the answer and 3 other parameters)
    for name, n, least, most in (("n_parameters", n_parameters, 4, len(combos)),
                                 ("n_messages", n_messages, 1, len(ids))):
        if not least <= n <= most:
            raise ValueError(f"{name}={n!r}: a product has {least} to {most} of them")
    rng.shuffle(combos)
    for c, a in combos[:n_parameters]:
        unit, purpose, values = ATTRIBUTES[a]
        i = rng.randrange(1, len(values) - 1)
        lo, hi = rng.randrange(0, i), rng.randrange(i + 1, len(values))
        d.parameters.append(Parameter(f"{c}_{a}", c, a, values[i], values[lo], values[hi], unit,
                                      purpose.format(c=c)))
    ids = rng.sample(ids, n_messages)
    components = sorted({p.component for p in d.parameters})
    for n in ids:
        p = rng.choice(d.parameters)
        sev = rng.choice("EW")
        verb = rng.choice(["restart", "reload"])
        d.messages.append(Message(f"{prefix}{n}-{sev}", p.component, SEVERITY[sev],
                                  f"The {p.component} {PROBLEMS[p.attribute]}.", p.name,
                                  f"{d.cli} {verb} {p.component}"))
    pairs = [(v, c) for v in VERBS for c in components]
    if not 1 <= n_commands <= len(pairs):
        raise ValueError(f"n_commands={n_commands!r}: a product with these {n_parameters} parameters has 1 to "
                         f"{len(pairs)} commands")
    rng.shuffle(pairs)
    for v, c in pairs[:n_commands]:
        flags = rng.sample(FLAGS, 3)
        meanings = rng.sample(FLAG_MEANINGS, 3)
        d.commands.append(Command(f"{d.cli} {v} {c}", f"{v.capitalize()}s the {c} component.",
                                  dict(zip(flags, meanings))))
    return d


# ---- the manual as files -------------------------------------------------------------------------------------

def parameter_text(d: Domain, p: Parameter) -> str:
    """One parameter entry as prose (the form trajectories, CoT traces and the HTML table all agree with)."""
    return (f"{p.name} sets {p.purpose}. Default: {p.default}. Range: {p.low} to {p.high}. Unit: {p.unit}. "
            f"Set it in {d.config_file}.")


def message_text(m: Message) -> str:
    return (f"Severity: {m.severity}. Meaning: {m.meaning} Corrective action: increase {m.parameter}, "
            f"then run {m.command}.")


def _html_parameters(d: Domain, component: str, params: list[Parameter]) -> str:
    rows = []
    for p in params:
        rows.append(f"<h2>{p.name}</h2>\n<p>{p.name} sets {p.purpose}.</p>\n<table>"
                    f"<tr><th>Default</th><td>{p.default}</td></tr>"
                    f"<tr><th>Range</th><td>{p.low} to {p.high}</td></tr>"
                    f"<tr><th>Unit</th><td>{p.unit}</td></tr></table>\n"
                    f"<p>Set it in {d.config_file}.</p>")
    title = f"{component.capitalize()} parameters"
    return (f"<html><head><title>{title}</title></head><body>\n<h1>{title}</h1>\n"
            f"<p>Parameters of the {component} component of {d.product}.</p>\n" + "\n".join(rows) + "\n</body></html>\n")


def _markdown_messages(d: Domain, messages: list[Message], title: str) -> str:
    out = [f"# {title}\n", f"Messages that {d.product} writes to its log.\n"]
    for m in messages:
        out.append(f"## {m.id}\n\n{message_text(m)}\n")
    return "\n".join(out)


def _text_commands(d: Domain, commands: list[Command]) -> str:
    out = [f"{d.cli} commands", "=" * len(f"{d.cli} commands"), "",
           f"Commands of the {d.cli} tool that controls {d.product}.", ""]
    for c in commands:
        out += [c.name, "-" * len(c.name), "", c.purpose + " Options:"]
        out += [f"{flag}: {meaning}." for flag, meaning in c.options.items()]
        out.append("")
    return "\n".join(out) + "\n"


def write_manual(d: Domain, out_dir) -> list[Path]:
    """The manual as .html (parameters), .md (messages) and .txt (commands) files; returns their paths."""
    out = Path(out_dir)
    (out / "parameters").mkdir(parents=True, exist_ok=True)
    written = []
    by_component: dict[str, list[Parameter]] = {}
    for p in d.parameters:
        by_component.setdefault(p.component, []).append(p)
    for c, params in sorted(by_component.items()):
        path = out / "parameters" / f"{c}.html"
        path.write_text(_html_parameters(d, c, params), encoding="utf-8")
        written.append(path)
    msgs = sorted(d.messages, key=lambda m: m.id)
    for sev, name in SEVERITY.items():
        part = [m for m in msgs if m.id.endswith("-" + sev)]
        path = out / f"messages-{name}s.md"
        path.write_text(_markdown_messages(d, part, f"{d.product} {name} messages"), encoding="utf-8")
        written.append(path)
    path = out / "commands.txt"
    path.write_text(_text_commands(d, d.commands), encoding="utf-8")
    written.append(path)
    return written
