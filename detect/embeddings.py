"""YOLO-World text embeddings: computed once with CLIP, stored in a file, read everywhere else.

A YOLO-World model scores boxes against one text embedding per class. ultralytics computes those
with CLIP whenever it needs them: ``WorldModel.get_text_pe`` is called by ``WorldModel.set_classes``
(from ``YOLOWorld.set_classes``, the ``on_pretrain_routine_end`` callback that sets the EMA model's
classes, and ``WorldValidator`` for a stand-alone val) and by ``WorldTrainer.generate_text_embeddings``
(while building the training set, with its own name-keyed cache under ``images/``, which goes stale
when prompts change). CLIP needs the ``clip`` package and a 340 MB download, so offline it cannot run.

defectkit computes the embeddings once (``detect embed``), stores them beside the data set
(``yolo/text_embeddings_clip-ViT-B-32.pt``: names, prompts, tensor; loads with ``weights_only=True``)
and feeds ultralytics from that file: ``ultralytics_patched(text_embeddings=table)``
(``detect/_ultralytics.py``, where every ultralytics patch lives) answers ``WorldModel.get_text_pe``
from the table while ultralytics runs, and :class:`FileTextWorldTrainer` answers
``generate_text_embeddings`` from the same table. Every call site above goes through one of the two,
so none of them can reach CLIP.

A class's embedding is the embedding of its prompt (``hole`` -> "a hole in wood"); ultralytics keeps
using the class name as the key, so labels, names and the checkpoint stay in the defect names.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import packaging
import packaging.version  # what clip-anytorch reads through pkg_resources (see _import_clip)
import torch

from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import atomic_torch_save, check_torch_file, load_weights_only
from defectkit.core.weights import fetch
from defectkit.detect._ultralytics import PatchedTrainer, clip_text_model, ultralytics_patched, weights_dir

CLIP_VARIANT = "clip:ViT-B/32"
# OpenAI's ViT-B/32 file, the one clip.load("ViT-B/32") downloads (its SHA-256 is in the path; clip checks it).
CLIP_WEIGHTS_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"
)
EMBED_DIM = 512
FORMAT = "defectkit-text-embeddings/1"
ENV_FILE = "DEFECTKIT_TEXT_EMBEDDINGS"  # how a DDP worker process finds the file
RUN_FILE = "text_embeddings.pt"  # the copy in each run folder


def default_path(yolo_dir: str | Path, variant: str = CLIP_VARIANT) -> Path:
    """Where ``detect embed`` stores the embeddings for a data set.

    >>> default_path("out/wood/yolo").name
    'text_embeddings_clip-ViT-B-32.pt'
    """
    return Path(yolo_dir) / f"text_embeddings_{variant.replace(':', '-').replace('/', '-')}.pt"


def parse_prompts(spec: str | None, names: list[str]) -> list[str]:
    """The prompt of each class: its name unless ``spec`` ("hole=a hole in wood,scratch=...") says otherwise.

    >>> parse_prompts("hole=a hole in wood", ["color", "hole"])
    ['color', 'a hole in wood']
    """
    prompts = dict(zip(names, names))
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        name, sep, prompt = item.partition("=")
        name, prompt = name.strip(), prompt.strip()
        if not sep or not prompt:
            raise DefectkitError(f"--prompts: {item!r} is not NAME=PROMPT")
        if name not in prompts:
            raise DefectkitError(f"--prompts: {name!r} is not a class of the data set ({', '.join(names)})")
        prompts[name] = prompt
    return [prompts[n] for n in names]


@dataclass
class TextEmbeddings:
    """One unit-norm embedding per class, computed from its prompt by ``model`` (or random)."""

    names: list[str]
    prompts: list[str]
    embeddings: torch.Tensor  # (len(names), EMBED_DIM) float32
    model: str = CLIP_VARIANT
    seed: int | None = None

    def lookup(self, texts: list[str]) -> torch.Tensor:
        """Embeddings for class names or prompts, shaped (len(texts), dim) like CLIP's output."""
        index = {n: i for i, n in enumerate(self.names)}
        index.update({p: i for i, p in enumerate(self.prompts)})
        missing = [t for t in texts if t.strip() not in index]
        if missing:
            raise DefectkitError(
                f"no text embedding for {', '.join(map(repr, missing))} (embeddings hold "
                f"{', '.join(self.names)}); make them with `detect embed --data DATA.yaml` or pass "
                "--text-embeddings random"
            )
        return self.embeddings[[index[t.strip()] for t in texts]]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "seed": self.seed,
            "names": list(self.names),
            "prompts": list(self.prompts),
            "embeddings": self.embeddings.detach().float().cpu().contiguous(),
        }

    def save(self, path: str | Path) -> Path:
        return atomic_torch_save(self.to_dict(), path)

    def check_names(self, names: list[str], source: str | Path) -> None:
        if list(self.names) != list(names):
            raise DefectkitError(
                f"{source}: text embeddings are for classes {self.names}, the data set has {list(names)}; "
                "remake them with `detect embed --data DATA.yaml --overwrite`"
            )


def load(path: str | Path) -> TextEmbeddings:
    """Read a file written by :meth:`TextEmbeddings.save` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    obj = load_weights_only(path, "text-embeddings file")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DefectkitError(f"{path}: not a defectkit text-embeddings file (format {FORMAT} expected)")
    emb = obj["embeddings"]
    if emb.ndim != 2 or emb.shape[0] != len(obj["names"]):
        raise DefectkitError(f"{path}: embeddings of shape {tuple(emb.shape)} for {len(obj['names'])} names")
    return TextEmbeddings(
        obj["names"], obj["prompts"], emb.float(), obj.get("model", CLIP_VARIANT), obj.get("seed")
    )


def random_embeddings(names: list[str], prompts: list[str] | None = None, *, seed: int = 0) -> TextEmbeddings:
    """Deterministic unit-norm random embeddings: for tests and from-scratch training without CLIP.

    >>> e = random_embeddings(["a", "b"], seed=0)
    >>> tuple(e.embeddings.shape), round(float(e.embeddings[0].norm()), 4)
    ((2, 512), 1.0)
    """
    gen = torch.Generator().manual_seed(int(seed))
    emb = torch.randn(len(names), EMBED_DIM, generator=gen)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    return TextEmbeddings(list(names), list(prompts or names), emb, model="random", seed=int(seed))


# What `pip install "defectkit[clip]"` brings: OpenAI's CLIP code from the package index (the same
# `clip` module, ViT-B/32 text tower and tokenizer as ultralytics' git fork, which a package on the
# index cannot depend on).
CLIP_INSTALL = 'pip install "defectkit[clip]" (clip-anytorch: OpenAI\'s CLIP from the package index)'
# The `clip` functions ultralytics' text model calls.
CLIP_API = ("load", "tokenize")


def _import_clip() -> types.ModuleType:
    """``import clip``. clip-anytorch 2.6 (the index's release) reads ``packaging`` through
    ``pkg_resources`` for a torch version check, and setuptools 82 removed ``pkg_resources``: when it is
    missing, a stand-in holding just ``packaging`` is importable while ``clip`` imports, and only then."""
    try:
        return importlib.import_module("clip")
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
    stand_in = types.ModuleType("pkg_resources")
    stand_in.packaging = packaging  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = stand_in
    try:
        return importlib.import_module("clip")
    finally:
        if sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]


def check_clip_package() -> None:
    """Raise a one-line DefectkitError unless ``import clip`` gives OpenAI's CLIP API.

    The package named ``clip`` on the package index is a clipboard manager: installed by mistake, it
    imports fine and fails later inside ultralytics. It is named here, with the package to install.
    """
    if importlib.util.find_spec("clip") is None:
        raise DefectkitError(
            f"CLIP is not installed: {CLIP_INSTALL}; or make the embeddings where CLIP is installed and pass "
            "the .pt file with --text-embeddings FILE (or --text-embeddings random)"
        )
    try:
        module = _import_clip()
    except Exception as exc:  # noqa: BLE001  (a broken third-party package fails in any way)
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DefectkitError(
            f"the installed `clip` module does not import ({type(exc).__name__}: {first}); {CLIP_INSTALL}"
        ) from None
    missing = [name for name in CLIP_API if not callable(getattr(module, name, None))]
    if missing:
        where = getattr(module, "__file__", None) or "the installed `clip` module"
        raise DefectkitError(
            f"{where}: this `clip` is not OpenAI's CLIP (it has no clip.{missing[0]}; the package index's `clip` "
            f"is a clipboard manager): pip uninstall clip, then {CLIP_INSTALL}"
        )


def clip_weights() -> Path:
    """The CLIP ViT-B/32 file in the private weights folder, where ultralytics' ``clip.load`` keeps it:
    the cached file, else downloaded with a timeout (offline: a clear error)."""
    return fetch(
        CLIP_WEIGHTS_URL,
        weights_dir() / "clip" / Path(CLIP_WEIGHTS_URL).name,
        timeout=30.0,
        hint="put it there, or copy a text-embeddings file made elsewhere and pass --text-embeddings FILE "
        "(or --text-embeddings random)",
    )


def clip_embeddings(names: list[str], prompts: list[str], *, device: str = "cpu") -> TextEmbeddings:
    """Encode the prompts with CLIP ViT-B/32 (ultralytics' text model, the one YOLO-World was trained with)."""
    check_clip_package()
    weights = clip_weights()
    check_torch_file(weights, "CLIP file")
    try:
        with warnings.catch_warnings():
            # clip.load tries torch.jit.load first (OpenAI's file is TorchScript), which torch now deprecates
            warnings.filterwarnings(
                "ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning
            )
            model = clip_text_model(weights, torch.device(device))
        with torch.no_grad():
            emb = model.encode_text(model.tokenize(prompts)).float().cpu()
    except DefectkitError:
        raise
    except Exception as exc:  # noqa: BLE001  (clip.load fails in many ways on a file that is not CLIP's)
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DefectkitError(
            f"{weights}: CLIP ViT-B/32 could not be loaded from this file ({type(exc).__name__}: {first}); "
            "delete it to download it again, or pass --text-embeddings FILE|random"
        ) from None
    return TextEmbeddings(list(names), list(prompts), emb, model=CLIP_VARIANT)


def resolve(
    spec: str | None,
    names: list[str],
    yolo_dir: str | Path,
    *,
    prompts_spec: str | None = None,
    seed: int = 0,
) -> TextEmbeddings:
    """The embeddings a command uses: ``spec`` is a file, ``"random"``, or None for the default file.

    Never computes CLIP: with no file it raises, saying how to make one (``detect embed``).
    """
    prompts = parse_prompts(prompts_spec, names)
    if spec == "random":
        return random_embeddings(names, prompts, seed=seed)
    path = Path(spec) if spec else default_path(yolo_dir)
    if not path.is_file():
        raise DefectkitError(
            f"{path}: no text embeddings for this data set; make them once with `detect embed --data "
            f"{Path(yolo_dir) / 'data.yaml'}` (needs CLIP and internet the first time), pass "
            "--text-embeddings FILE, or --text-embeddings random for a from-scratch run"
        )
    table = load(path)
    table.check_names(names, path)
    if prompts_spec and table.prompts != prompts:
        raise DefectkitError(
            f"{path}: made for prompts {table.prompts}, --prompts asks for {prompts}; remake them with "
            "`detect embed --prompts ... --overwrite`"
        )
    return table


def _table_from_environment() -> TextEmbeddings:
    """The table of the training run: the file ``$DEFECTKIT_TEXT_EMBEDDINGS`` names, set by
    :func:`training_embeddings` in this process and inherited by ultralytics' DDP workers."""
    path = os.environ.get(ENV_FILE)
    if not path:
        raise DefectkitError("FileTextWorldTrainer needs text embeddings; run it through `detect train`")
    return load(path)


def _file_text_world_trainer() -> type:
    with ultralytics_patched():  # ultralytics reads its environment on first import
        from ultralytics.models.yolo.world import WorldTrainer
        from ultralytics.utils import RANK

    class FileTextWorldTrainer(PatchedTrainer, WorldTrainer):
        """ultralytics' WorldTrainer in the patch context, text embeddings from the defectkit file, not CLIP."""

        def __init__(self, *args, **kwargs):
            self.text_table = _table_from_environment()  # PatchedTrainer: get_text_pe answers from it
            super().__init__(*args, **kwargs)
            if RANK in {-1, 0}:  # in the run folder from the start: what resume, val and predict read
                self.text_table.save(Path(self.save_dir) / RUN_FILE)

        def generate_text_embeddings(self, texts, batch, cache_dir):
            emb = self.text_table.lookup(list(texts)).to(self.device)
            return dict(zip(texts, emb))

    FileTextWorldTrainer.__module__ = __name__
    FileTextWorldTrainer.__qualname__ = "FileTextWorldTrainer"
    return FileTextWorldTrainer


def __getattr__(name: str) -> type:
    """``FileTextWorldTrainer``, made on first use (it subclasses an ultralytics class, which is imported
    only inside the patch context). A module attribute, so DDP workers find the class by name."""
    if name == "FileTextWorldTrainer":
        cls = globals()[name] = _file_text_world_trainer()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def training_embeddings(table: TextEmbeddings, file: Path) -> Iterator[type]:
    """Context for a YOLO-World training run: yields the trainer class to hand to ``YOLO.train``.

    ``file`` (the embeddings used) is where the trainer reads them, through ``$DEFECTKIT_TEXT_EMBEDDINGS``:
    in this process and in ultralytics' DDP workers, which rebuild the trainer in new processes.
    """
    table.save(file)
    old = os.environ.get(ENV_FILE)
    os.environ[ENV_FILE] = str(file)
    try:
        yield sys.modules[__name__].FileTextWorldTrainer
    finally:
        if old is None:
            os.environ.pop(ENV_FILE, None)
        else:
            os.environ[ENV_FILE] = old
