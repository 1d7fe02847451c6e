#include <gtest/gtest.h>

#include "engine/cuda/cuda-model.h"
#include "tests/test-util.h"

TEST(cuda_model, placeholder) { EV_REQUIRE_CUDA(); }
