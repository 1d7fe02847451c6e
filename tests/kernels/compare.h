// Error measures shared by the kernel tests (CPU references and CUDA kernels).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace evident::test {

// ||a - b|| / ||b|| in double; infinity if a holds a NaN or inf (an unwritten, poisoned element).
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace evident::test
