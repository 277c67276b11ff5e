"""Counting weights, FLOPs and activations per layer group."""
from __future__ import annotations

from edge.models import load_model
from edge.planner import count_stats


def test_tiny_mlp_counts_are_exact(tiny_mlp):
    stats = count_stats(tiny_mlp.model, tiny_mlp.example_inputs)
    g = stats.groups["linear"]
    assert g.weight_params == 64 * 128 + 128 * 128 + 128 * 10
    assert g.flops == 2.0 * g.weight_params
    assert g.rows == 128 + 128 + 10 and g.modules == 3 and g.min_in_features == 64
    assert stats.other_params == 128 + 128 + 10  # biases
    assert stats.total_params == sum(p.numel() for p in tiny_mlp.model.parameters())
    # 3 linear + 2 relu calls; the relus read and write (1, 128) fp32 each
    assert stats.ops == 5 and stats.matmul_ops == 3 and stats.memory_ops == 2
    assert stats.memory_bytes == 2 * 2 * 128 * 4


def test_tiny_lm_groups_embedding_rows_and_attention_matmuls(tiny_lm):
    stats = count_stats(tiny_lm.model, tiny_lm.example_inputs)
    assert set(stats.groups) == {"embedding", "attention", "ffn", "head"}
    emb = stats.groups["embedding"]
    assert emb.weight_params == 256 * 96 and emb.read_params == 32 * 96 and emb.flops == 0
    assert stats.groups["attention"].flops == 3 * 4 * 2.0 * 96 * 96 * 32
    # q @ k^T and probs @ v: 2 matmuls of 32x32x24 per head, 4 heads, 3 layers
    assert stats.other_flops == 3 * 4 * 2 * 2.0 * 32 * 32 * 24
    assert stats.peak_activation_bytes > 0
    # 22 projections + 6 attention matmuls; norms, rope, softmax, residuals as memory ops
    assert stats.matmul_ops == 22 + 6
    assert stats.memory_ops > 50 and stats.ops > stats.matmul_ops + stats.memory_ops // 2
    assert stats.memory_bytes > stats.memory_ops * 32 * 4  # each touches at least a (32,) row


def test_cnn_counts_convs_norms_and_pooling():
    tiny_cnn = load_model("tiny-cnn")
    stats = count_stats(tiny_cnn.model, tiny_cnn.example_inputs)
    assert stats.groups["conv"].modules == 9 and stats.matmul_ops == 10  # + the head
    assert stats.memory_ops >= 9 + 9 + 1  # batch norms, clamps, the global mean
