// The Allocator concept: a policy object holding only hyperparameters, whose
//   BitAssignment allocate(const SensitivityTable&, const Budget&) const
// returns one option per layer whose total cost never exceeds the budget. Per-run state lives in
// the call (ensmallen's pattern). check_allocator<A>() turns a missing member into a named
// static_assert instead of a wall of template errors.
#pragma once

#include "fragile/alloc/assignment.hpp"
#include "fragile/alloc/budget.hpp"
#include "fragile/sensitivity/table.hpp"

#include <concepts>
#include <string_view>

namespace fragile::alloc {

template <class A>
concept HasAllocate = requires(const A a, const SensitivityTable& t, const Budget& b) {
  { a.allocate(t, b) } -> std::same_as<BitAssignment>;
};
template <class A>
concept HasAllocatorName = requires {
  { A::name } -> std::convertible_to<std::string_view>;
};

template <class A>
concept Allocator = HasAllocate<A> && HasAllocatorName<A>;

/// Use as `static_assert(check_allocator<MyAllocator>());` to get a message naming what is missing.
template <class A>
consteval bool check_allocator() {
  static_assert(HasAllocate<A>,
                "fragile::alloc::Allocator: the policy needs "
                "`BitAssignment allocate(const SensitivityTable&, const Budget&) const`");
  static_assert(
      HasAllocatorName<A>,
      "fragile::alloc::Allocator: the policy needs `static constexpr std::string_view name`");
  return HasAllocate<A> && HasAllocatorName<A>;
}

}  // namespace fragile::alloc
