// Routes over the store: health probes, collections, documents (list, read, upload, delete), and the web page.
#include <filesystem>

#include "api/server-internal.h"
#include "engine/base/error.h"
#include "ingest/indexer.h"
#include "ingest/store.h"
#include "web/assets.h"

namespace evident::api {
namespace {

// One connection per request: a store is single-threaded, and opening is cheap (migrations already applied).
ingest::store open_store(const server::impl& s, bool write = false) {
  if (!write && !std::filesystem::exists(s.cfg.store_dir / ingest::store::db_file))
    throw http_error{503, "store_missing", "no store at " + s.cfg.store_dir.string() + " (run `evident ingest`)"};
  return ingest::store(s.cfg.store_dir, write ? ingest::open_mode::read_write : ingest::open_mode::read_only);
}

json document_json(const ingest::document_row& d, const std::string& collection) {
  json headings = json::array();
  for (const auto& h : d.headings)
    headings.push_back({{"level", h.level}, {"title", h.title}, {"char_start", h.char_start}});
  return {{"id", d.id},           {"collection", collection}, {"path", d.path},       {"title", d.title},
          {"format", d.format},   {"size", d.size},           {"sha256", d.sha256},   {"mtime_ns", d.mtime},
          {"ingested_at", d.ingested_at}, {"pages", d.pages}, {"page_starts", d.page_starts},
          {"headings", headings}, {"char_count", d.char_count}};
}

std::map<int64_t, std::string> collection_names(ingest::store& st) {
  std::map<int64_t, std::string> names;
  for (const auto& c : st.collections()) names[c.id] = c.name;
  return names;
}

void healthz(server::impl&, const httplib::Request&, httplib::Response& res, const caller&) {
  send_json(res, {{"status", "ok"}});
}

void readyz(server::impl& s, const httplib::Request&, httplib::Response& res, const caller&) {
  json body = {{"status", "ready"}, {"queue_waiting", s.pool.waiting()}, {"workers_busy", s.pool.running()}};
  std::string problem;
  if (!s.answers) problem = "no answer pipeline configured";
  try {
    auto st = open_store(s);
    body["documents"] = st.document_count();
    body["chunks"] = st.chunk_count();
  } catch (const http_error& e) {
    problem = e.message;
  } catch (const evident::error& e) {
    problem = e.what();
  }
  if (s.answers) {
    body["generator"] = s.answers->generator_name();
    body["extractive"] = s.answers->extractive();
  }
  if (!problem.empty()) {
    body["status"] = "not_ready";
    body["reason"] = problem;
    res.set_header("Retry-After", std::to_string(s.cfg.retry_after_s));
    return send_json(res, body, 503);
  }
  send_json(res, body);
}

void list_collections(server::impl& s, const httplib::Request&, httplib::Response& res, const caller&) {
  auto st = open_store(s);
  json out = json::array();
  for (const auto& c : st.collections())
    out.push_back({{"id", c.id}, {"name", c.name}, {"documents", c.documents}, {"chunks", c.chunks}});
  send_json(res, {{"collections", out}});
}

void list_documents(server::impl& s, const httplib::Request& req, httplib::Response& res, const caller&) {
  auto st = open_store(s);
  std::optional<int64_t> cid;
  if (req.has_param("collection")) {
    const std::string name = req.get_param_value("collection");
    if (name.empty() || name.size() > 128) throw http_error{422, "invalid_field", "collection must be 1-128 bytes"};
    cid = st.collection_id(name);
    if (!cid) throw http_error{404, "not_found", "no collection '" + name + "'"};
  }
  const auto names = collection_names(st);
  json out = json::array();
  for (const auto& d : st.documents(cid)) {
    auto it = names.find(d.collection_id);
    out.push_back(document_json(d, it == names.end() ? "" : it->second));
  }
  send_json(res, {{"documents", out}});
}

void get_document(server::impl& s, const httplib::Request& req, httplib::Response& res, const caller&) {
  const int64_t id = path_id(req);
  auto st = open_store(s);
  const bool with_text = req.get_param_value("text") != "false";
  auto d = st.document(id, with_text);
  if (!d) throw http_error{404, "not_found", "no document " + std::to_string(id)};
  const auto names = collection_names(st);
  auto it = names.find(d->collection_id);
  json out = document_json(*d, it == names.end() ? "" : it->second);
  if (with_text) out["text"] = d->text;
  send_json(res, out);
}

void upload_documents(server::impl& s, const httplib::Request& req, httplib::Response& res, const caller&) {
  if (!req.is_multipart_form_data())
    throw http_error{400, "bad_request", "upload as multipart/form-data with one or more 'file' parts"};
  if (!req.has_file("file")) throw http_error{422, "missing_field", "multipart field 'file' is required"};
  ingest::ingest_options opt;
  opt.collection = s.cfg.upload_collection;
  if (req.has_file("collection")) opt.collection = req.get_file_value("collection").content;
  if (opt.collection.empty() || opt.collection.size() > 128)
    throw http_error{422, "invalid_field", "collection must be 1-128 bytes"};
  json out = json::array();
  std::lock_guard<std::mutex> lock(s.store_write_mu);
  auto st = open_store(s, true);
  auto range = req.files.equal_range("file");
  for (auto it = range.first; it != range.second; ++it) {
    const auto& f = it->second;
    const std::string name = std::filesystem::path(f.filename).filename().string();
    if (name.empty() || name == "." || name == "..")
      throw http_error{422, "invalid_field", "each 'file' part needs a filename (its extension picks the format)"};
    const int64_t id = ingest::ingest_bytes(st, name, f.content, opt);
    out.push_back({{"id", id}, {"path", name}, {"collection", opt.collection}, {"size", f.content.size()}});
  }
  send_json(res, {{"documents", out}}, 201);
}

void delete_document(server::impl& s, const httplib::Request& req, httplib::Response& res, const caller&) {
  const int64_t id = path_id(req);
  std::lock_guard<std::mutex> lock(s.store_write_mu);
  auto st = open_store(s, true);
  if (!ingest::remove_document(st, id)) throw http_error{404, "not_found", "no document " + std::to_string(id)};
  send_json(res, {{"deleted", id}});
}

void web_file(server::impl&, const httplib::Request& req, httplib::Response& res, const caller&) {
  const web::asset* a = web::find_asset(req.path);
  if (a == nullptr) throw http_error{404, "not_found", "no file " + req.path};
  res.set_header("Cache-Control", "no-cache");
  res.set_content(std::string(a->body), std::string(a->mime).c_str());
}

}  // namespace

std::vector<route> document_routes() {
  return {
      {"GET", "/healthz", access::open, healthz},
      {"GET", "/readyz", access::open, readyz},
      {"GET", "/v1/collections", access::read, list_collections},
      {"GET", "/v1/documents", access::read, list_documents},
      {"POST", "/v1/documents", access::write, upload_documents},
      {"GET", "/v1/documents/{id}", access::read, get_document},
      {"DELETE", "/v1/documents/{id}", access::write, delete_document},
      {"GET", "/", access::open, web_file},
      {"GET", "/{file}", access::open, web_file},
  };
}

}  // namespace evident::api
