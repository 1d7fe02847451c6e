// SHA-256 through OpenSSL's libcrypto (EVP): it uses the CPU's SHA extensions where there are any (SHA-NI here),
// where the portable C loop this replaced was about 3% of an ingest's CPU. libssl-dev comes with libcpp-httplib-dev.
#include "ingest/sha256.h"

#include <openssl/evp.h>

#include "engine/base/error.h"

namespace evident::ingest {

std::string sha256_hex(std::string_view bytes) {
  // Fetched once (an implicit fetch per call costs a provider lookup); EVP_MD objects are thread-safe to share.
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  EV_THROW_IF_NOT_KIND(md != nullptr, internal, "OpenSSL has no SHA256 digest");
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EV_THROW_IF_NOT_KIND(EVP_Digest(bytes.data(), bytes.size(), d, &n, md, nullptr) == 1 && n == 32, internal,
                       "OpenSSL SHA256 failed on ", bytes.size(), " bytes");
  static const char* hex = "0123456789abcdef";
  std::string out(64, '0');
  for (unsigned int i = 0; i < 32; ++i) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 0xF];
  }
  return out;
}

}  // namespace evident::ingest
