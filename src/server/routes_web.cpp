// GET / and /assets/...: the web page (web/), a client of this same API. Its files are public
// (they hold no data), so they are served without a token; everything they ask for later goes
// through the API's rights. Every reply carries a strict Content-Security-Policy: scripts and
// styles from this origin only, and inline styles only with the nonce of that very reply (the SQL
// editor writes its own).
#include <string>

#include "core/random.h"
#include "server/routes.h"
#include "server/web_assets.h"

namespace probing::server {

const WebAsset* find_web_asset(std::string_view path) noexcept {
  if (path == "/" || path.empty()) path = "/index.html";
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    if (path == kWebAssets[i].path) return &kWebAssets[i];
  }
  return nullptr;
}

namespace {

constexpr std::string_view kNoncePlaceholder = "__PROBING_CSP_NONCE__";

// 128 random bits, base64: a fresh nonce for each page ("" without random bytes: the page then
// has no inline styles, and the SQL editor shows unstyled).
std::string make_nonce() {
  Result<std::string> bytes = random_bytes(16);
  return bytes.is_ok() ? to_base64(*bytes) : std::string();
}

std::string content_security_policy(const std::string& nonce) {
  return "default-src 'none'; script-src 'self'; style-src 'self'" +
         (nonce.empty() ? std::string() : " 'nonce-" + nonce + "'") +
         "; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
         "frame-ancestors 'none'";
}

}  // namespace

HttpResponse handle_web(const HttpRequest& request) {
  if (request.method != "GET") return error_response(405, "BadRequest", "use GET " + request.path);
  const WebAsset* asset = find_web_asset(request.path);
  if (!asset) return error_response(404, "NotFound", "no page " + request.path);
  HttpResponse r;
  r.content_type = asset->content_type;
  std::string nonce;
  if (asset->gzip) {
    if (!request.accepts_gzip) {
      return error_response(406, "NotAcceptable",
                            "the page's files are served gzip-compressed, as every browser accepts "
                            "(curl: --compressed)");
    }
    r.body.assign(reinterpret_cast<const char*>(asset->data), asset->size);
    r.headers.emplace_back("Content-Encoding", "gzip");
    r.headers.emplace_back("Vary", "Accept-Encoding");
    // Their names are the same from one build to the next (a chunk's name has its hash), so a
    // browser revalidates: an agent upgraded in place serves its new files at once.
    r.headers.emplace_back("Cache-Control", "no-cache");
  } else {
    nonce = make_nonce();
    r.body.assign(reinterpret_cast<const char*>(asset->data), asset->size);
    for (size_t at = r.body.find(kNoncePlaceholder); at != std::string::npos;
         at = r.body.find(kNoncePlaceholder, at + nonce.size())) {
      r.body.replace(at, kNoncePlaceholder.size(), nonce);
    }
    r.headers.emplace_back("Cache-Control", "no-store");
  }
  r.headers.emplace_back("Content-Security-Policy", content_security_policy(nonce));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  return r;
}

}  // namespace probing::server
