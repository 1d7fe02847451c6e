#include "api/server-pipeline.h"

namespace evident::api {
namespace {

class pipeline_service : public answer_service {
 public:
  explicit pipeline_service(const answer::pipeline_options& opt) : pipeline_(opt) {}

  answer::ask_result ask(const answer::ask_request& request, const answer::ask_events& events) override {
    return pipeline_.ask(request, &events);
  }
  std::optional<answer::ask_result> load(int64_t answer_id) override {
    return answer::load_answer(pipeline_.options().store_dir, answer_id);
  }
  std::string generator_name() const override { return pipeline_.options().generator; }
  bool extractive() const override { return pipeline_.options().generator == "extractive"; }

 private:
  answer::pipeline pipeline_;
};

}  // namespace

std::shared_ptr<answer_service> make_pipeline_service(const answer::pipeline_options& opt) {
  return std::make_shared<pipeline_service>(opt);
}

}  // namespace evident::api
