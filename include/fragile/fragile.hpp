// Umbrella header: everything fragile offers. Each header also compiles on its own.
#pragma once

// core: errors, dtypes, tensors, randomness
#include "fragile/core/dtype.hpp"
#include "fragile/core/elementwise.hpp"
#include "fragile/core/error.hpp"
#include "fragile/core/mapped_file.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/core/tensor.hpp"

// io: checkpoints, configs, tokenizers, text
#include "fragile/io/hf_config.hpp"
#include "fragile/io/llama2c.hpp"
#include "fragile/io/load_model.hpp"
#include "fragile/io/safetensors.hpp"
#include "fragile/io/tensor_store.hpp"
#include "fragile/io/text.hpp"
#include "fragile/io/tokenizer/tokenizer.hpp"

// data: evaluation and calibration windows
#include "fragile/data/windows.hpp"

// model description
#include "fragile/model/config.hpp"

// sensitivity, statistics, studies
#include "fragile/sensitivity/nsds.hpp"
#include "fragile/stats/bootstrap.hpp"
#include "fragile/stats/correlation.hpp"
#include "fragile/study/progress.hpp"
#include "fragile/study/result_store.hpp"
