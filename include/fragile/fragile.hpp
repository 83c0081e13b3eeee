// Umbrella header: everything fragile offers. Each header also compiles on its own.
#pragma once

// core: errors, dtypes, tensors, randomness
#include "fragile/core/dtype.hpp"
#include "fragile/core/elementwise.hpp"
#include "fragile/core/error.hpp"
#include "fragile/core/content_hash.hpp"
#include "fragile/core/mapped_file.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/core/tensor.hpp"

// backends
#include "fragile/backend/backend.hpp"
#include "fragile/backend/cpu.hpp"

// io: checkpoints, configs, tokenizers, text
#include "fragile/io/hf_config.hpp"
#include "fragile/io/hf_writer.hpp"
#include "fragile/io/llama2c.hpp"
#include "fragile/io/load_model.hpp"
#include "fragile/io/safetensors.hpp"
#include "fragile/io/tensor_store.hpp"
#include "fragile/io/text.hpp"
#include "fragile/io/tokenizer/bpe_trainer.hpp"
#include "fragile/io/tokenizer/tokenizer.hpp"
#include "fragile/io/utf8.hpp"

// data: evaluation and calibration windows
#include "fragile/data/windows.hpp"

// model: description, runtime (forward, backward, capture), evaluation
#include "fragile/eval/divergence.hpp"
#include "fragile/eval/perplexity.hpp"
#include "fragile/model/capture.hpp"
#include "fragile/model/config.hpp"
#include "fragile/model/transformer.hpp"

// quantizers
#include "fragile/quant/adaround.hpp"
#include "fragile/quant/gptq.hpp"
#include "fragile/quant/hybrid.hpp"
#include "fragile/quant/lwc.hpp"
#include "fragile/quant/quantizer.hpp"
#include "fragile/quant/result.hpp"
#include "fragile/quant/rtn.hpp"
#include "fragile/quant/spec.hpp"

// sensitivity and allocation
#include "fragile/alloc/allocator.hpp"
#include "fragile/alloc/assignment.hpp"
#include "fragile/alloc/binary_split.hpp"
#include "fragile/alloc/block_qp.hpp"
#include "fragile/alloc/budget.hpp"
#include "fragile/alloc/greedy_marginal.hpp"
#include "fragile/alloc/mckp.hpp"
#include "fragile/sensitivity/candidates.hpp"
#include "fragile/sensitivity/channel_importance.hpp"
#include "fragile/sensitivity/metrics.hpp"
#include "fragile/sensitivity/nsds.hpp"
#include "fragile/sensitivity/oracle.hpp"
#include "fragile/sensitivity/pass.hpp"
#include "fragile/sensitivity/table.hpp"

// statistics and studies
#include "fragile/stats/bootstrap.hpp"
#include "fragile/stats/correlation.hpp"
#include "fragile/study/context.hpp"
#include "fragile/study/correlation_table.hpp"
#include "fragile/study/fragility_map.hpp"
#include "fragile/study/open_store.hpp"
#include "fragile/study/progress.hpp"
#include "fragile/study/quant_setting.hpp"
#include "fragile/study/ratios.hpp"
#include "fragile/study/report.hpp"
#include "fragile/study/result_store.hpp"
#include "fragile/study/results.hpp"
#include "fragile/study/shootout.hpp"

// export: plans and checkpoints for deployment tools
#include "fragile/export/fake_quant_checkpoint.hpp"
#include "fragile/export/gguf_writer.hpp"
#include "fragile/export/gptq_checkpoint.hpp"
#include "fragile/export/importance_matrix.hpp"
#include "fragile/export/llama_cpp_recipe.hpp"
#include "fragile/export/plan.hpp"
#include "fragile/export/quantize_plan.hpp"
#include "fragile/export/staged_directory.hpp"
