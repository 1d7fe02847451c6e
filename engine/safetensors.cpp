#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/base/error.h"

namespace evident::engine {

using json = nlohmann::json;

const char* to_string(st_dtype d) {
  switch (d) {
    case st_dtype::f32: return "F32";
    case st_dtype::f16: return "F16";
    case st_dtype::bf16: return "BF16";
    case st_dtype::i64: return "I64";
    case st_dtype::i32: return "I32";
    case st_dtype::u8: return "U8";
    default: return "?";
  }
}

size_t dtype_size(st_dtype d) {
  switch (d) {
    case st_dtype::f32: case st_dtype::i32: return 4;
    case st_dtype::f16: case st_dtype::bf16: return 2;
    case st_dtype::i64: return 8;
    case st_dtype::u8: return 1;
    default: return 0;
  }
}

static st_dtype parse_dtype(const std::string& s) {
  if (s == "F32") return st_dtype::f32;
  if (s == "F16") return st_dtype::f16;
  if (s == "BF16") return st_dtype::bf16;
  if (s == "I64") return st_dtype::i64;
  if (s == "I32") return st_dtype::i32;
  if (s == "U8") return st_dtype::u8;
  return st_dtype::other;
}

int64_t tensor_view::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string tensor_view::shape_string() const { return engine::shape_string(shape); }

safetensors_file::safetensors_file(const std::filesystem::path& path) : path_(path.string()) {
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) EV_THROW(not_found, path_, ": no such file (expected a .safetensors file)");
    EV_THROW(io, path_, ": cannot open: ", std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    EV_THROW(io, path_, ": cannot stat: ", std::strerror(errno));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    EV_THROW(corrupt, path_, ": truncated safetensors file: ", size_, " bytes, expected at least the 8-byte header length");
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    EV_THROW(io, path_, ": mmap failed: ", std::strerror(errno));
  }
  try {
    const auto* base = static_cast<const unsigned char*>(map_);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];
    EV_THROW_IF_NOT_KIND(hlen <= size_ - 8, corrupt, path_, ": truncated or corrupt safetensors file: header length ",
                         hlen, " exceeds the file size ", size_);
    json h;
    try {
      h = json::parse(std::string(reinterpret_cast<const char*>(base + 8), hlen));
    } catch (const json::exception& e) {
      EV_THROW(corrupt, path_, ": safetensors header is not valid JSON: ", e.what());
    }
    EV_THROW_IF_NOT_KIND(h.is_object(), corrupt, path_, ": safetensors header: expected a JSON object");
    const size_t data_start = 8 + hlen;
    const size_t data_size = size_ - data_start;
    for (auto it = h.begin(); it != h.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (it->is_object())
          for (auto m = it->begin(); m != it->end(); ++m)
            if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
        continue;
      }
      const json& e = *it;
      tensor_view t;
      t.name = it.key();
      t.file = path_;
      try {
        t.dtype_name = e.at("dtype").get<std::string>();
        t.shape = e.at("shape").get<std::vector<int64_t>>();
        const auto offs = e.at("data_offsets").get<std::vector<uint64_t>>();
        EV_THROW_IF_NOT_KIND(offs.size() == 2 && offs[0] <= offs[1], corrupt, path_, ": tensor ", t.name,
                             ": data_offsets must be [begin, end]");
        t.dtype = parse_dtype(t.dtype_name);
        EV_THROW_IF_NOT_KIND(offs[1] <= data_size, corrupt, path_, ": truncated safetensors file: tensor ", t.name,
                             " needs bytes [", offs[0], ", ", offs[1], ") of the data section, which holds only ",
                             data_size, " bytes");
        for (int64_t d : t.shape) EV_THROW_IF_NOT_KIND(d >= 0, corrupt, path_, ": tensor ", t.name, ": negative dimension");
        if (t.dtype != st_dtype::other) {
          const uint64_t want = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype);
          EV_THROW_IF_NOT_KIND(want == offs[1] - offs[0], corrupt, path_, ": tensor ", t.name, ": ", t.dtype_name, " ",
                               t.shape_string(), " needs ", want, " bytes, the header gives ", offs[1] - offs[0]);
        }
        t.data = base + data_start + offs[0];
      } catch (const json::exception& ex) {
        EV_THROW(corrupt, path_, ": tensor ", t.name, ": bad header entry: ", ex.what());
      }
      tensors_.emplace(t.name, std::move(t));
    }
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

safetensors_file::~safetensors_file() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

safetensors_dir::safetensors_dir(const std::filesystem::path& path) : origin_(path.string()) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  if (fs::is_regular_file(path)) {
    files.push_back(path);
  } else {
    EV_THROW_IF_NOT_KIND(fs::is_directory(path), not_found, origin_, ": no such checkpoint directory or file");
    const fs::path index = path / "model.safetensors.index.json";
    if (fs::exists(index)) {
      std::ifstream in(index);
      json j;
      try {
        j = json::parse(in);
      } catch (const json::exception& e) {
        EV_THROW(corrupt, index.string(), ": not valid JSON: ", e.what());
      }
      EV_THROW_IF_NOT_KIND(j.contains("weight_map") && j["weight_map"].is_object(), corrupt, index.string(),
                           ": expected a weight_map object");
      std::set<std::string> shard_names;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        EV_THROW_IF_NOT_KIND(it->is_string(), corrupt, index.string(), ": weight_map[", it.key(), "]: expected a file name");
        shard_names.insert(it->get<std::string>());
      }
      for (const auto& s : shard_names) {
        EV_THROW_IF_NOT_KIND(fs::exists(path / s), not_found, index.string(), ": shard ", s,
                             " is listed in weight_map but missing from ", origin_);
        files.push_back(path / s);
      }
    } else if (fs::exists(path / "model.safetensors")) {
      files.push_back(path / "model.safetensors");
    } else {
      for (const auto& e : fs::directory_iterator(path))
        if (e.path().extension() == ".safetensors" && e.path().filename() != "reference.safetensors")
          files.push_back(e.path());
      std::sort(files.begin(), files.end());
      EV_THROW_IF_NOT_KIND(!files.empty(), not_found, origin_,
                           ": no model.safetensors, model.safetensors.index.json or *.safetensors file");
    }
  }
  for (const auto& f : files) {
    files_.push_back(std::make_unique<safetensors_file>(f));
    for (const auto& [name, t] : files_.back()->tensors()) {
      EV_THROW_IF_NOT_KIND(index_.count(name) == 0, corrupt, origin_, ": tensor ", name, " appears in two files (",
                           index_[name]->file, " and ", t.file, ")");
      index_[name] = &t;
    }
  }
}

const tensor_view& safetensors_dir::get(const std::string& name) const {
  auto it = index_.find(name);
  EV_THROW_IF_NOT_KIND(it != index_.end(), not_found, origin_, ": missing tensor ", name);
  return *it->second;
}

const tensor_view& safetensors_dir::get(const std::string& name, const std::vector<int64_t>& expected) const {
  const tensor_view& t = get(name);
  EV_THROW_IF_NOT_MSG(t.shape == expected, origin_, ": tensor ", name, ": wrong shape: expected ", shape_string(expected),
                      ", found ", t.shape_string());
  return t;
}

std::vector<std::string> safetensors_dir::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : index_) out.push_back(n);
  return out;
}

size_t safetensors_dir::total_bytes() const {
  size_t s = 0;
  for (const auto& [n, t] : index_) s += static_cast<size_t>(t->numel()) * dtype_size(t->dtype);
  return s;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::vector<float> to_f32(const tensor_view& t) {
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  const auto* p = static_cast<const unsigned char*>(t.data);
  switch (t.dtype) {
    case st_dtype::f32: std::memcpy(out.data(), p, n * 4); break;
    case st_dtype::bf16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        uint32_t u = static_cast<uint32_t>(v) << 16;
        std::memcpy(&out[i], &u, 4);
      }
      break;
    case st_dtype::f16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = half_to_float(v);
      }
      break;
    default:
      EV_THROW(invalid_input, t.file, ": tensor ", t.name, ": dtype ", t.dtype_name, " is not a float type (F32/F16/BF16)");
  }
  return out;
}

std::vector<int64_t> to_i64(const tensor_view& t) {
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<int64_t> out(n);
  const auto* p = static_cast<const unsigned char*>(t.data);
  if (t.dtype == st_dtype::i64) {
    std::memcpy(out.data(), p, n * 8);
  } else if (t.dtype == st_dtype::i32) {
    for (size_t i = 0; i < n; ++i) {
      int32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      out[i] = v;
    }
  } else {
    EV_THROW(invalid_input, t.file, ": tensor ", t.name, ": dtype ", t.dtype_name, " is not an integer type (I64/I32)");
  }
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<tensor_to_write>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  uint64_t off = 0;
  for (const auto& t : tensors) {
    uint64_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    h[t.name] = {{"dtype", to_string(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8 != 0) hs.push_back(' ');  // align the data section to 8 bytes
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  EV_THROW_IF_NOT_KIND(out.good(), io, path.string(), ": cannot open for writing");
  unsigned char len[8];
  uint64_t hl = hs.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(hl >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  for (const auto& t : tensors) {
    uint64_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    out.write(static_cast<const char*>(t.bytes), static_cast<std::streamsize>(n));
  }
  out.flush();
  EV_THROW_IF_NOT_KIND(out.good(), io, path.string(), ": write failed");
}

}  // namespace evident::engine
