// engine::safetensors: memory-mapped reading of Hugging Face safetensors checkpoints, single file or sharded.
//
// File format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [b, e]}},
// then the data; offsets are relative to the end of the header. Every header is checked against the file size
// when opened, so a truncated file fails at load with its path, the tensor and the byte range it needed.
//
// A checkpoint directory holds either `model.safetensors` or `model.safetensors.index.json` (weight_map: tensor
// name -> shard file) plus its shards; every `*.safetensors` file is used when neither exists.
//
// Lifetime: tensor views point into the mappings; they stay valid as long as the safetensors_dir (or file) lives.
// Thread-safety: immutable after construction; concurrent reads are fine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace evident::engine {

enum class st_dtype { f32, f16, bf16, i64, i32, u8, other };
const char* to_string(st_dtype d);
size_t dtype_size(st_dtype d);

// A read-only view of one tensor in a mapped file.
struct tensor_view {
  std::string name;
  st_dtype dtype = st_dtype::other;
  std::string dtype_name;      // as written in the header ("BF16", "F32", ...)
  std::vector<int64_t> shape;  // row-major
  const void* data = nullptr;  // dtype_size(dtype) * numel() bytes, possibly unaligned for f32 (never for bf16/f16)
  std::string file;            // the file it lives in (for messages)

  int64_t numel() const;
  std::string shape_string() const;  // "[4, 64]"
};

// One mapped .safetensors file.
class safetensors_file {
 public:
  // Maps the file and parses its header. Throws evident::error: not_found / io for the OS, corrupt for a bad or
  // truncated file (message: path, what was expected, what was found).
  explicit safetensors_file(const std::filesystem::path& path);
  ~safetensors_file();
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;

  const std::map<std::string, tensor_view>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, tensor_view> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory (or of one file).
class safetensors_dir {
 public:
  // `path` is a directory (see above) or a single .safetensors file.
  explicit safetensors_dir(const std::filesystem::path& path);

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // The tensor, or evident::error (not_found) naming it and the checkpoint.
  const tensor_view& get(const std::string& name) const;
  // The tensor checked against an expected shape: a mismatch throws (invalid_input) with the name, the expected
  // and the found shape.
  const tensor_view& get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  std::vector<std::string> names() const;
  size_t total_bytes() const;
  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
  std::vector<std::unique_ptr<safetensors_file>> files_;
  std::map<std::string, const tensor_view*> index_;
};

std::string shape_string(const std::vector<int64_t>& shape);

// Writes tensors to a .safetensors file (used by `evident model run --logits-out` and tests). Data is copied as is;
// `bytes` must hold dtype_size * numel bytes. Throws evident::error (io) on failure.
struct tensor_to_write {
  std::string name;
  st_dtype dtype = st_dtype::f32;
  std::vector<int64_t> shape;
  const void* bytes = nullptr;
};
void write_safetensors(const std::filesystem::path& path, const std::vector<tensor_to_write>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Converts a float tensor (f32 / f16 / bf16) to fp32. Throws for other dtypes.
std::vector<float> to_f32(const tensor_view& t);
// Converts an integer tensor (i64 / i32) to int64. Throws for other dtypes.
std::vector<int64_t> to_i64(const tensor_view& t);

float half_to_float(uint16_t h);

}  // namespace evident::engine
