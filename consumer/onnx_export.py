"""Exporting a sentence-transformers model to ONNX, from its local files: fp32, then int8.

Run by :func:`consumer.onnx_encoder.ensure_export` in a child process (torch stays out of the
service's memory), as ``python -m consumer.onnx_export MODEL_DIR OUT_DIR``. It writes into OUT_DIR:

- ``model.onnx``: the transformer (TorchScript exporter, opset 17, eager attention: the graph
  onnxruntime's fusions know), inputs ``input_ids`` and ``attention_mask``, output the token vectors;
- ``model-int8.onnx``: the same with its weights quantised per output channel to 7-bit int8
  (``onnxruntime.quantization.quantize_dynamic``; activations are quantised on the fly, uint8).
  The reduced range keeps AVX2 CPUs without VNNI from saturating their u8·s8 products, so the
  int8 embeddings are the same there as on this VNNI machine, and as fast as full-range int8 here;
  uint8 weights ran 0.7× as fast, per-tensor scales lost accuracy (cosine to fp32 0.95 on average);
- ``tokenizer.json`` (the model's fast tokenizer) and ``encoder.json`` (length cap, dimension).

Only models made of a Transformer, mean Pooling and optionally Normalize are supported; the
embeddings are normalised either way, as labelwatch's torch backend does.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

OPSET = 17


def export(model_dir: Path, out: Path) -> None:
    """Write the ONNX files of the sentence-transformers model in ``model_dir`` into ``out``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True,
                                model_kwargs={"attn_implementation": "eager"})
    _check_supported(model)
    transformer = model[0]
    token_types = "token_type_ids" in transformer.tokenizer.model_input_names

    class TokenVectors(torch.nn.Module):
        """The transformer's last hidden state, from input ids and attention mask alone."""

        def __init__(self):
            super().__init__()
            self.network = transformer.auto_model

        def forward(self, input_ids, attention_mask):
            extra = {"token_type_ids": torch.zeros_like(input_ids)} if token_types else {}
            return self.network(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    ids = torch.full((2, 8), 100, dtype=torch.long)
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])  # traced with padding: no all-ones shortcut is baked in
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(TokenVectors().eval(), (ids, mask), str(out / "model.onnx"), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["token_vectors"],
                          dynamic_axes={name: {0: "batch", 1: "tokens"}
                                        for name in ("input_ids", "attention_mask", "token_vectors")},
                          opset_version=OPSET)
    quantize_dynamic(out / "model.onnx", out / "model-int8.onnx", per_channel=True, reduce_range=True,
                     weight_type=QuantType.QInt8)
    transformer.tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    (out / "encoder.json").write_text(json.dumps({
        "max_length": int(model.max_seq_length), "dimension": int(model.get_sentence_embedding_dimension()),
        "source": str(model_dir), "torch": torch.__version__, "opset": OPSET}, indent=2) + "\n")


def _check_supported(model) -> None:
    kinds = [type(module).__name__ for module in model]
    pooling = model[1].get_config_dict() if kinds[1:2] == ["Pooling"] else {}
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True}  # the older config
    mean = pooling.get("pooling_mode") == "mean" or modes == {"pooling_mode_mean_tokens"}
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]) or not mean:
        raise ValueError(f"the onnx backends run Transformer + mean Pooling (+ Normalize) models; this one is "
                         f"{' + '.join(kinds)} with pooling {pooling}: use embedding_backend torch")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m consumer.onnx_export MODEL_DIR OUT_DIR")
    export(Path(sys.argv[1]), Path(sys.argv[2]))
