// `evident serve --store PATH`: the HTTP API, the OpenAI-compatible endpoint and the web page (api/server.h).
// SIGINT / SIGTERM stop it gracefully: new requests get 503, running answers and streams finish, then it exits 0.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <thread>

#include "api/cli.h"
#include "api/commands.h"
#include "api/server-pipeline.h"
#include "api/server.h"
#include "engine/base/error.h"

namespace evident::cli {

namespace {

int to_int(const std::string& flag, const std::string& text, int lo, int hi) {
  try {
    size_t used = 0;
    const long v = std::stol(text, &used);
    if (used == text.size() && v >= lo && v <= hi) return static_cast<int>(v);
  } catch (const std::exception&) {
  }
  throw usage_error{flag + ": expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
                    text + "'"};
}

volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }

}  // namespace

int cmd_serve(const std::vector<std::string>& argv) {
  args a("serve", "[--store PATH] [--model DIR | --openai URL] [--host ADDR] [--port N] [options]",
         "Serve the REST API (/v1), the OpenAI-compatible /v1/chat/completions and the web page.\n"
         "Without --model or --openai, answers are extractive (quoted from the documents; no language model).");
  auto& store = a.option("--store", "PATH", "store directory", "evident-store");
  auto& model = a.option("--model", "DIR", "checkpoint directory: answer with the local engine");
  auto& device = a.option("--device", "cpu|cuda",
                          "where --model runs: cpu (one answer at a time, cached prompt prefixes) or cuda (concurrent "
                          "answers share the GPU's steps; builds with CUDA only)",
                          "cpu");
  auto& openai = a.option("--openai", "URL", "OpenAI-compatible server to answer with (http://host:port[/v1])");
  auto& openai_model = a.option("--openai-model", "NAME", "model name for --openai", "default");
  auto& host = a.option("--host", "ADDR", "address to listen on", "127.0.0.1");
  auto& port = a.option("--port", "N", "port (0 = any free port)", "8080");
  auto& config = a.option("--config", "FILE", "JSON config: api_keys, rate limit, timeouts, limits (docs/api.md)");
  auto& workers = a.option("--workers", "N", "answers computed at once", "4");
  auto& queue = a.option("--queue", "N", "answers waiting for a worker before 503", "256");
  auto& http_threads = a.option("--http-threads", "N", "connection threads (one per streaming client)", "64");
  auto& quiet = a.flag("--quiet", "no access log");
  if (!a.parse(argv, 0, 0)) return 0;

  api::server_config cfg;
  if (!config.empty()) api::load_config_file(config, cfg);  // flags given on the command line override the file
  cfg.store_dir = store;
  if (a.given("--host") || config.empty()) cfg.host = host;
  if (a.given("--port") || config.empty()) cfg.port = to_int("--port", port, 0, 65535);
  if (a.given("--workers") || config.empty()) cfg.workers = to_int("--workers", workers, 1, 1024);
  if (a.given("--queue") || config.empty()) cfg.queue = to_int("--queue", queue, 0, 1 << 20);
  if (a.given("--http-threads") || config.empty()) cfg.http_threads = to_int("--http-threads", http_threads, 1, 4096);
  cfg.quiet = quiet;
  if (!model.empty() && !openai.empty()) throw usage_error{"give --model or --openai, not both"};

  answer::pipeline_options opt;
  opt.store_dir = store;
  opt.generator = !openai.empty() ? "openai" : !model.empty() ? "engine" : "extractive";
  opt.openai_url = openai;
  opt.openai_model = openai_model;
  if (const char* key = std::getenv("OPENAI_API_KEY")) opt.openai_api_key = key;
  opt.model_dir = model;
  require_one_of("--device", device, {"cpu", "cuda"});
  opt.engine_device = device;

  // Stop signals set a flag that a watcher thread polls (a handler may not call stop() itself; sigwait would not do
  // either, because libraries such as OpenBLAS start threads before main() that would not have the signals blocked).
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that goes away is a failed write, not a dead server

  api::server srv(cfg, api::make_pipeline_service(opt));
  const int bound = srv.start();
  std::fprintf(stderr, "evident: serving http://%s:%d (store %s, %s answers, %d workers, queue %d)\n",
               cfg.host.c_str(), bound, cfg.store_dir.string().c_str(), opt.generator.c_str(), cfg.workers, cfg.queue);
  std::fflush(stderr);

  std::atomic<bool> ended{false};
  std::thread watcher([&] {
    while (!ended && g_stop_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (ended) return;
    std::fprintf(stderr, "evident: %s received, finishing running requests\n",
                 g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
    srv.stop();
  });
  srv.run();
  ended = true;
  watcher.join();
  std::fprintf(stderr, "evident: stopped\n");
  return 0;
}

}  // namespace evident::cli
