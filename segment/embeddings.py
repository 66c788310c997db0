"""The frozen image encoder and its on-disk embedding cache.

SAM's encoder dominates the cost (over a minute per 1024x1024 image for vit_b on a CPU, against a
couple of seconds per decoder step), and it never changes while the decoder is fine-tuned. So each
image is encoded once; the result is stored as float16 ``.npy`` keyed by

* the image file's content (SHA-256 of its bytes: a renamed copy hits, an edited image misses),
* the model identity (registry name + weights fingerprint, see ``segment.models``),
* the encoder input size,

and read back by later epochs, later runs, ``segment val`` and ``segment predict --cache-dir``.
Preprocessing is SamPredictor's exactly: ResizeLongestSide on uint8 RGB, then ``Sam.preprocess``
(normalise once, pad to square).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from defectkit.core.digest import sha256_file
from defectkit.core.imageio import read_image
from defectkit.core.weights import cache_dir
from defectkit.segment.data import image_size
from defectkit.segment.models import LoadedSam


def default_cache_dir() -> Path:
    return cache_dir() / "sam_embeddings"


class EmbeddingCache:
    """float16 embeddings on disk under ``root/<model key>/<image digest>.npy``.

    >>> cache = EmbeddingCache("/tmp/emb", "vit_tiny:random-0", 256)  # doctest: +SKIP
    >>> cache.get("0123...") is None  # doctest: +SKIP
    True
    """

    def __init__(self, root: str | Path, identity: str, img_size: int) -> None:
        model_key = hashlib.sha256(f"{identity}|{img_size}".encode()).hexdigest()[:16]
        self.dir = Path(root) / model_key
        self.identity = identity

    def path(self, digest: str) -> Path:
        return self.dir / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        p = self.path(digest)
        if not p.is_file():
            return None
        try:
            return np.load(p)
        except (ValueError, OSError, EOFError):
            return None  # a damaged entry is recomputed and overwritten

    def put(self, digest: str, embedding: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # np.save to a temp name + rename: concurrent DDP ranks never read a half-written file.
        tmp = self.dir / f".{digest}.{os.getpid()}.tmp.npy"
        np.save(tmp, embedding.astype(np.float16))
        os.replace(tmp, self.path(digest))


class ImageEncoder:
    """Encode images with a frozen SAM encoder, through the cache when one is given.

    ``embed(path)`` returns ``(embedding (1, C, h, w) float32 on the model's device, original_size,
    input_size)`` where sizes are (H, W): what ``Sam.postprocess_masks`` needs.
    """

    def __init__(self, model: LoadedSam, cache: EmbeddingCache | None = None, amp: bool = True) -> None:
        self.model = model
        self.cache = cache
        self.transform = ResizeLongestSide(model.sam.image_encoder.img_size)
        # bf16 on CUDA halves encoder time; embeddings are stored float16 anyway.
        self.amp = amp and model.sam.device.type == "cuda"
        self.hits = 0
        self.misses = 0
        self._digests: dict[tuple[str, int, int], str] = {}

    def digest(self, path: str | Path) -> str:
        """The file's content hash, remembered per (path, size, mtime) so epochs do not re-hash."""
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            # The image half of the cache key: 32 hex digits of SHA-256 (128 bits) keep names short.
            self._digests[key] = sha256_file(path)[:32]
        return self._digests[key]

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return tuple(ResizeLongestSide.get_preprocess_shape(height, width, self.transform.target_length))

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.model.sam.device).permute(2, 0, 1).contiguous()
        return self.model.sam.preprocess(x[None].float())

    @torch.no_grad()  # not inference_mode: fresh embeddings feed the decoder's autograd graph
    def encode_arrays(self, images: list[np.ndarray]) -> torch.Tensor:
        """Encode uint8 RGB arrays in one batch, no cache: (B, C, h, w) float32."""
        x = torch.cat([self._prepare(im) for im in images])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            out = self.model.sam.image_encoder(x)
        return out.float()

    def embed(self, path: str | Path, image: np.ndarray | None = None):
        """Embedding of one image file (through the cache), plus its original and input sizes."""
        return self.embed_many([path], [image] if image is not None else None)[0]

    def embed_many(self, paths: list[str | Path], images: list[np.ndarray] | None = None, batch: int = 1):
        """Embeddings for several files; cache misses are encoded ``batch`` at a time."""
        results: list = [None] * len(paths)
        todo: list[int] = []
        digests = [self.digest(p) if self.cache else "" for p in paths]
        for i, p in enumerate(paths):
            hit = self.cache.get(digests[i]) if self.cache else None
            if hit is not None:
                self.hits += 1
                h, w = self._sizes(p, images[i] if images else None)
                emb = torch.from_numpy(hit).to(self.model.sam.device, torch.float32)
                results[i] = (emb[None], (h, w), self.input_size(h, w))
            else:
                todo.append(i)
        for start in range(0, len(todo), max(1, batch)):
            idx = todo[start : start + max(1, batch)]
            arrays = [images[i] if images else read_image(paths[i], "rgb") for i in idx]
            embs = self.encode_arrays(arrays)
            for i, arr, emb in zip(idx, arrays, embs):
                self.misses += 1
                if self.cache:
                    half = emb.to(torch.float16).cpu().numpy()
                    self.cache.put(digests[i], half)
                    # Use the float16-rounded value, so a first epoch equals every cached one.
                    emb = torch.from_numpy(half).to(emb.device, torch.float32)
                h, w = arr.shape[:2]
                results[i] = (emb[None], (h, w), self.input_size(h, w))
        return results

    @staticmethod
    def _sizes(path: str | Path, image: np.ndarray | None) -> tuple[int, int]:
        if image is not None:
            return image.shape[:2]
        w, h = image_size(Path(path), str(path))
        return h, w
