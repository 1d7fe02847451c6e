// Stub bodies (the API builds; the implementation follows).
#include "engine/cuda/cuda-model.h"

#include "engine/base/error.h"

namespace evident::engine {

struct cuda_model::impl {
  model_config cfg;
  cuda_model_options opt;
};

cuda_model::cuda_model(std::unique_ptr<impl> p) : p_(std::move(p)) {}
cuda_model::~cuda_model() = default;

std::unique_ptr<cuda_model> cuda_model::load(const std::filesystem::path&, const cuda_model_options&) {
  EV_THROW(internal, "cuda_model: not implemented yet");
}
std::unique_ptr<cuda_model> cuda_model::from_tensors(const model_config&, const tensor_lookup&,
                                                     const cuda_model_options&, const std::string&) {
  EV_THROW(internal, "cuda_model: not implemented yet");
}
const model_config& cuda_model::config() const { return p_->cfg; }
const cuda_model_options& cuda_model::options() const { return p_->opt; }
std::int64_t cuda_model::vocab_size() const { return p_->cfg.vocab_size; }
sequence_slots::admission cuda_model::open_sequence(std::int64_t) { return {-1, "not implemented"}; }
void cuda_model::close_sequence(int) {}
std::int64_t cuda_model::sequence_length(int) const { return 0; }
const sequence_slots& cuda_model::slots() const { EV_THROW(internal, "not implemented"); }
std::string cuda_model::can_step(const std::vector<step_entry>&) const { return "not implemented"; }
step_plan cuda_model::step(const std::vector<step_entry>&, float*) { EV_THROW(internal, "not implemented"); }
step_plan cuda_model::prepare(const std::vector<step_entry>&, int) { EV_THROW(internal, "not implemented"); }
void cuda_model::launch(kernels::stream_t) { EV_THROW(internal, "not implemented"); }
const float* cuda_model::logits() const { return nullptr; }
void cuda_model::read_logits(float*, kernels::stream_t) { EV_THROW(internal, "not implemented"); }
kernels::stream_t cuda_model::stream() const { return nullptr; }
std::size_t cuda_model::weight_bytes() const { return 0; }
std::size_t cuda_model::state_bytes() const { return 0; }
std::size_t cuda_model::buffer_bytes() const { return 0; }
std::string cuda_model::kernel_report() const { return {}; }

}  // namespace evident::engine
