// The web page's files, embedded at build time (scripts/embed-web.py writes the table).
#pragma once

#include <cstddef>
#include <string_view>

namespace probing::server {

struct WebAsset {
  const char* path;  // "/index.html", "/assets/app.js"
  const char* content_type;
  const unsigned char* data;
  size_t size;           // of `data`
  size_t original_size;  // before compression
  bool gzip;             // `data` is gzip-compressed
};

extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

// The asset served at `path` ("/" is /index.html), or nullptr.
const WebAsset* find_web_asset(std::string_view path) noexcept;

}  // namespace probing::server
