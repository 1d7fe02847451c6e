// The server's answer_service over the real answer pipeline (api/pipeline.h): what `evident serve` and the
// pipeline-backed tests use. Thread-safe: answer::pipeline::ask may run on several workers at once.
#pragma once

#include <memory>

#include "api/server.h"

namespace evident::api {

// Builds the pipeline from `opt` (throws evident::error for a missing store or an unusable generator).
std::shared_ptr<answer_service> make_pipeline_service(const answer::pipeline_options& opt);

}  // namespace evident::api
