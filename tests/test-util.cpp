#include "tests/test-util.h"

#include <system_error>

#ifdef EVIDENT_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace evident::test {

std::filesystem::path source_path(const std::string& rel) {
  return std::filesystem::path(EVIDENT_TEST_SOURCE_DIR) / rel;
}

std::filesystem::path shared_path(const std::string& rel) {
  auto p = std::filesystem::path(EVIDENT_TEST_SHARED_DIR) / rel;
  if (!std::filesystem::exists(p)) {
    ADD_FAILURE() << "shared test data missing: " << p << " (expected ../shared beside the project root)";
  }
  return p;
}

std::filesystem::path scratch_dir(const std::string& name) {
  auto p = std::filesystem::path(EVIDENT_TEST_BINARY_DIR) / "scratch" / name;
  std::error_code ec;
  std::filesystem::remove_all(p, ec);
  std::filesystem::create_directories(p);
  return p;
}

int cuda_device_count() {
#ifdef EVIDENT_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

}  // namespace evident::test
