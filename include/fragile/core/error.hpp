// fragile's error hierarchy. Library code never calls exit() or abort(): every failure is a
// fragile::Error subclass whose message names the input (file, tensor, field, argument) and
// what was expected, e.g.
//   safetensors: tensor 'model.layers.0.mlp.up_proj.weight' ends at byte 9123, file has 4096
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace fragile {

/// Base of every exception fragile throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// A file could not be opened, read, mapped or written, or its bytes are malformed.
class IoError : public Error {
  using Error::Error;
};

/// A configuration (config.json, a CLI option, a policy's hyperparameters) is missing a field or
/// holds a value fragile does not support.
class ConfigError : public Error {
  using Error::Error;
};

/// Tensor or matrix extents disagree with what an operation expects.
class ShapeError : public Error {
  using Error::Error;
};

/// NaN/Inf where finite values are required, or a numerical procedure that cannot proceed.
class NumericError : public Error {
  using Error::Error;
};

/// A bit budget outside the feasible range, or an allocation that cannot meet it.
class BudgetError : public Error {
  using Error::Error;
};

/// An argument outside its documented domain (bits outside 2..8, empty batch, bad token id...).
class ArgumentError : public Error {
  using Error::Error;
};

/// Throws E with a message formatted by fmt. Usage:
///   fragile::raise<IoError>("safetensors: '{}' is {} bytes, expected at least 8", path, n);
template <class E, class... Args>
[[noreturn]] inline void raise(fmt::format_string<Args...> format, Args&&... args) {
  throw E(fmt::format(format, std::forward<Args>(args)...));
}

/// Throws E with the formatted message unless `condition` holds.
template <class E, class... Args>
inline void require(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) throw E(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace fragile
