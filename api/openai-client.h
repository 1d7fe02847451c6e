// answer::openai_client: an engine::generator_i that calls any server speaking the OpenAI chat API
// (`POST {base}/v1/chat/completions`): vLLM, SGLang, llama.cpp's server, hosted APIs. Used for baselines (a larger
// model served elsewhere) and for deployments without a local GPU.
//
// Request: {model, messages, stream, temperature, top_p, max_tokens, stop, seed?, top_k?, min_p?,
//           presence_penalty?, repetition_penalty?}; with stream: also stream_options.include_usage.
// Response handling:
//   stream = true   Server-Sent Events: `data: {chunk}` lines until `data: [DONE]`; each chunk's
//                   choices[0].delta.reasoning_content (vLLM/SGLang reasoning parsers; also `reasoning`) becomes a
//                   reasoning_delta, choices[0].delta.content an answer_delta (a `<think>` inside content is split by
//                   the pipeline), `usage` a usage event, choices[0].finish_reason the finish reason.
//   stream = false  one JSON body: choices[0].message.{reasoning_content, content}, usage.
// Errors (connection refused, HTTP status >= 400, malformed JSON) end the stream with finish "error" and a message
// naming the URL and what went wrong; they never throw.
//
// Thread-safety: generate() may run concurrently; each call uses its own connection.
#pragma once

#include <string>

#include "engine/generator.h"

namespace evident::answer {

struct openai_options {
  std::string base_url;          // http://host:port or http://host:port/v1 (https:// too: Debian's httplib has OpenSSL)
  std::string model;             // sent as "model"
  std::string api_key;           // "Authorization: Bearer KEY" when not empty
  bool stream = true;
  int connect_timeout_s = 10;
  int read_timeout_s = 600;      // per read; long reasoning can pause a while between tokens
};

class openai_client : public engine::generator_i {
 public:
  // Throws evident::error (invalid_input) for a URL that is not http://host[:port][/path].
  explicit openai_client(openai_options opt);
  std::string name() const override { return "openai:" + opt_.model; }
  void generate(const engine::generate_request& request, const engine::event_callback& on_event) override;

 private:
  openai_options opt_;
  std::string host_;   // host[:port] part, with scheme
  std::string path_;   // the path of /chat/completions, e.g. /v1/chat/completions
};

}  // namespace evident::answer
