"""Hypothesis strategies for the YAML files users hand the loaders (run configs, search spaces), and the check
that a loader answered them as the command lines need: loaded, or one line of the framework's error.

A drawn file is a valid document with a few parts replaced, deleted or added (so the fuzz reaches the checks
deep inside, not only "expected a mapping"), or a random tree, rendered as YAML and then maybe spoiled as
bytes: UTF-16/32, latin-1, a BOM, a NUL, invalid UTF-8, a cut in the middle, CR line ends. The values are the
nasty ones: wrong types, huge ints (10**30, 10**4000), 1e308, inf, nan, giant strings and lists, a "billion
laughs" (lists sharing their parts, which YAML writes as anchors and aliases), a list that contains itself.
Some fixed documents add what ``yaml.safe_dump`` never writes: deep nesting, an int of 5000 digits, a
30 February, a recursive anchor, a Python tag, tabs.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import gc
import signal
import subprocess
import sys
import time

import yaml
from hypothesis import strategies as st

from stt.core.errors import STTError, one_line

MAX_SECONDS = 2.0  # CPU seconds per file: the bound (CPU, not wall clock, so a busy CI host cannot flake it)
MAX_MEMORY = 500 * 2**20  # bytes one file may take: the process's peak RSS while on it, less its RSS before
HANG_SECONDS = 20  # a loader still busy after this is stopped, so a hang fails the test instead of CI

WORDS = [
    "fbank",
    "wav2vec:x.pt",
    "base",
    "conv_block",
    "separable_conv_block",
    "attention_conv_block",
    "conv_attention_conv_block",
    "feed_forward",
    "onecycle",
    "cosine",
    "auto",
    "bf16",
    "fp32",
    "true",
    "null",
    "~",
    "small",
    "seed_base.yaml",
    "&a",
    "*a",
    "a\nb",
    "\u2028",
    "\x85",
    "\ufeff",
    "\t",
    "é",
    "💥",
    "",
]
KEYS = [
    # run config
    "frontend",
    "model",
    "train",
    "layers",
    "input_proj",
    "residual",
    "in_chan",
    "out_chan",
    "kernel",
    "stride",
    "dil",
    "k",
    "n_heads",
    "output_size",
    "d_ff",
    "dropout",
    "epochs",
    "lr",
    "seed",
    "batch_frames",
    "warmup",
    "compile",
    "buckets_per_octave",
    "num_workers",
    "time_width",
    # search space
    "width",
    "max_total_stride",
    "seeds",
    "layer",
    "branch",
    "branches",
    "single_ff",
    "type",
    "dilation",
    "glu",
    "heads",
    "attn_kernel",
    "low",
    "high",
    "log",
    "<<",
]

huge_ints = st.sampled_from([0, -1, 1, 2, 3, 4, 7, 16, 2**31, 2**53 + 1, 2**63, 2**64, 10**30, -(10**30), 10**4000])
ints = st.integers(-5, 70) | huge_ints | st.integers()
floats = st.floats() | st.sampled_from([1e308, -1e308, 5e-324, float("inf"), float("-inf"), float("nan"), 0.5, 1.5])
texts = st.sampled_from(WORDS) | st.text(max_size=10)
giant = st.sampled_from([2_000, 60_000, 200_000]).flatmap(  # the largest are past the loaders' size limit
    lambda n: st.sampled_from(["x" * n, [0] * (n // 30), {f"k{i}": i for i in range(n // 300)}])
)
scalars = st.none() | st.booleans() | ints | floats | texts | st.dates(datetime.date(1, 1, 1))
keys = st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(-3, 3) | st.none() | st.booleans()
trees = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)


@st.composite
def laughs(draw):
    """A billion laughs: ``width`` copies of ``width`` copies of ... of a value, sharing every level."""
    value = draw(scalars | trees)
    width, depth = draw(st.integers(2, 10)), draw(st.integers(2, 12))
    for _ in range(depth):
        value = [value] * width
    return value


def _self_containing(_) -> list:
    v: list = ["x"]
    v.append(v)
    return v


values = st.one_of(
    scalars,
    trees,
    laughs(),
    giant,
    st.just(None).map(_self_containing),
)


def _places(node, out: list, seen: set) -> list:
    """(container, key or index) of every value inside ``node``, each shared container (an alias) once."""
    if isinstance(node, (dict, list)) and id(node) not in seen and len(out) < 10_000:
        seen.add(id(node))
        for k in list(node)[:1000] if isinstance(node, dict) else range(min(len(node), 1000)):
            out.append((node, k))
            _places(node[k], out, seen)
    return out


def _mutate(draw, doc):
    """``doc`` with one value, anywhere in it, replaced, deleted, repeated (an alias) or given a sibling."""
    places = _places(doc, [], set())
    if not places:
        return draw(values)
    parent, k = draw(st.sampled_from(places))
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "alias"]))
    if op == "replace":
        parent[k] = draw(values)
    elif op == "delete":
        del parent[k]
    elif op == "alias":  # many references to one part: YAML anchors and aliases, expanded by whoever walks it
        parent[k] = [parent[k]] * draw(st.sampled_from([2, 9, 1000]))
    elif isinstance(parent, dict):
        parent[draw(keys)] = draw(values)
    else:
        parent.insert(draw(st.integers(0, len(parent))), draw(values))
    return doc


@st.composite
def documents(draw, valid: list):
    """A valid document with up to three parts spoiled (sometimes none), or a random tree."""
    if draw(st.integers(0, 9)) == 0:
        return draw(trees | laughs())
    doc = copy.deepcopy(draw(st.sampled_from(valid)))
    for _ in range(draw(st.integers(0, 3))):
        doc = _mutate(draw, doc)
    return doc


# a billion laughs as one flow value: a0 holds 9 x's, a1 9 a0's, ... a9 9**10 x's, in 460 bytes
BILLION_LAUGHS = (
    "[&a0 [x, x, x, x, x, x, x, x, x], "
    + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10))
    + "]"
)

# what yaml.safe_dump never writes
RAW = [
    f"model: {{layers: {BILLION_LAUGHS}}}\n".encode(),
    f"width: {BILLION_LAUGHS}\nlayers: 1\n".encode(),
    b"[" * 5000 + b"]" * 5000,
    b"a: " + b"{a: " * 3000 + b"1" + b"}" * 3000,
    b"".join(b" " * i + b"- \n" for i in range(200)),
    b"train: {epochs: " + b"9" * 5000 + b"}\n",
    b"width: " + b"9" * 5000 + b"\n",
    b"train: {seed: 2001-02-30}\n",
    b"width: &a [1, *a]\nlayers: 1\n",
    b"model: {layers: &a [[[*a]]]}\n",
    b"!!python/object/apply:os.system [touch /tmp/pwned]\n",
    b"width: !!binary aGVsbG8=\nlayers: 1\n",
    b"width: !!set {1, 2}\nlayers: 1\n",
    b"? [a, b]\n: 1\n",
    b"? {a: 1}\n: 1\n",
    b"a: &x 1\n<<: *x\n",
    b"width: 8\n\tlayers: 1\n",
    b"width: *nope\n",
    b"--- 1\n--- 2\n",
    b"%YAML 9.9\n---\nwidth: 8\n",
    b"width: 8\x00\n",
    b"\xef\xbb\xbf\xef\xbb\xbfwidth: 8\n",
    b"\xff\xfe" + "width: 8\nlayers: 2\n".encode("utf-16-le"),
    b"width: \xed\xa0\x80\n",  # a UTF-8 encoded surrogate
    b"",
    b"\n\n# only a comment\n",
    b"x" * (200 * 1024),
    b"width: &a 8\nlayers: [" + b"*a, " * 15_000 + b"]\n",  # 60 KB of aliases: within every limit
    b"a: &a [" + b"1, " * 1000 + b"]\nb: [" + b"*a, " * 101 + b"]\n",  # expands to just past the limit
]


@st.composite
def files(draw, valid: list) -> bytes:
    """The bytes of a YAML file the user might hand a loader: see the module's docstring."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(RAW))
    doc = draw(documents(valid))
    text = yaml.dump(  # libyaml's emitter: PyYAML's own takes seconds on the largest documents
        doc,
        Dumper=yaml.CSafeDumper,
        sort_keys=False,
        allow_unicode=draw(st.booleans()),
        default_flow_style=draw(st.sampled_from([False, None, True])),
        width=draw(st.sampled_from([80, 10**6])),
    )
    how = draw(
        st.sampled_from(
            ["utf-8"] * 8 + ["bom", "utf-16", "utf-16-le", "utf-32", "latin-1", "nul", "bad-utf8", "cut", "crlf", "cr"]
        )
    )
    if how == "utf-8":
        return text.encode()
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how in ("utf-16", "utf-16-le", "utf-32"):
        return text.encode(how, errors="surrogatepass")
    if how == "latin-1":
        return (text + "# café\n").encode("latin-1", errors="replace")
    if how == "crlf":
        return text.replace("\n", "\r\n").encode()
    if how == "cr":
        return text.replace("\n", "\r").encode()
    data = text.encode()
    at = draw(st.integers(0, len(data)))
    if how == "cut":
        return data[:at]
    bad = (
        b"\x00" if how == "nul" else draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
    )
    return data[:at] + bad + data[at:]


class Hung(Exception):
    pass


@contextlib.contextmanager
def hang_guard(seconds: float = HANG_SECONDS):
    """Stop the block (with :class:`Hung`) if it runs past ``seconds``: a hang fails the test, it does not stall CI."""

    def stop(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))


def restart_peak_rss() -> int:
    """This process's resident memory now, in bytes, from which its peak is measured again (Linux's clear_refs;
    where that is refused the peak stays the process's, which only overstates what comes after)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status("VmRSS")


def peak_rss() -> int:
    """This process's peak resident memory since :func:`restart_peak_rss`, in bytes."""
    return _status("VmHWM")


class Budget:
    """The bounds on each example of a fuzz test (CPU time, memory, a hang guard), and what the test observed."""

    def __init__(self):
        self.examples, self.slowest, self.slowest_wall, self.most_memory = 0, 0.0, 0.0, 0
        self.outcomes, self.details = {}, {}  # outcome -> count, and its first example's message

    @contextlib.contextmanager
    def example(self):
        before, cpu, wall = restart_peak_rss(), time.thread_time(), time.perf_counter()
        collecting = gc.isenabled()
        gc.disable()  # the bound is on the loader's work, not on collecting the garbage of thousands of examples
        try:
            with hang_guard():
                yield
        finally:
            if collecting:
                gc.enable()
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        memory = max(0, peak_rss() - before)
        self.examples += 1
        self.slowest, self.slowest_wall = max(self.slowest, cpu), max(self.slowest_wall, wall)
        self.most_memory = max(self.most_memory, memory)
        assert cpu < MAX_SECONDS, f"{cpu:.2f} s of CPU"
        assert memory < MAX_MEMORY, f"{memory / 2**20:.0f} MB"

    def count(self, outcome: str, detail: str = "") -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if detail:
            self.details.setdefault(outcome, detail[:300])

    def __str__(self):
        return (
            f"{self.examples} examples, slowest {self.slowest:.3f} s CPU ({self.slowest_wall:.3f} s wall), "
            f"most memory {self.most_memory / 2**20:.0f} MB, {self.outcomes}, e.g. {self.details}"
        )


def assert_one_line_error(e: BaseException, path) -> str:
    """``e`` is what the command lines print as one line and exit 2 on, and its line names the file."""
    assert isinstance(e, STTError), f"{type(e).__name__} is not a user error: {e!r}"[:2000]
    message = str(e)
    assert "\n" not in message and "\r" not in message, message[:2000]
    line = one_line(e)
    assert str(path) in line, f"the message does not name the file: {line[:500]}"
    assert len(line) < 1000, f"a {len(line)}-character line: {line[:500]}"
    return line


# runs a command and writes its peak RSS (KiB) to a file: measured from a small parent, since a child's peak counts
# the memory of the process it was forked from (here pytest's, hundreds of MB after a training test)
_MEASURED = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)"
)


def run_commands(commands: dict[str, list[str]], cwd, scratch) -> dict[str, tuple[int, str, str, int]]:
    """Run ``commands`` (name -> argv) at once in ``cwd``: name -> (exit status, stdout, stderr, peak RSS bytes)."""
    procs = {}
    for name, argv in commands.items():
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", _MEASURED, str(scratch / f"{name}.rss"), *argv],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err, int((scratch / f"{name}.rss").read_text()) * 1024)
    return results
