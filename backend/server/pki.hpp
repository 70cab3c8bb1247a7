// The backend's private CA (ECDSA P-256): the CA itself, the server certificate, terminal
// client certificates (generated key, or a CSR signed), fingerprints. OpenSSL 3.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"

namespace otac::backend::pki {

/// A private key and certificate, both PEM. The key is a secret: never log it.
struct KeyCert {
  std::string key_pem;
  std::string cert_pem;
};

/// Longest validity of a server or client certificate, days, including the backdated start:
/// the CA/Browser Forum's limit for TLS server certificates, which Apple enforces.
inline constexpr int max_leaf_days = 397;
/// How far notBefore is backdated for clocks that lag, seconds.
inline constexpr long backdate_seconds = 300;

/// Creates a self-signed CA (P-256, CA:TRUE, keyCertSign|cRLSign).
Result<KeyCert> make_ca(std::string_view common_name, int days);
/// Issues a TLS server certificate with the given DNS and IP subject alternative names.
/// Leaf certificates (server and client) are refused beyond max_leaf_days.
Result<KeyCert> issue_server(const KeyCert& ca, std::string_view common_name, const std::vector<std::string>& dns,
                             const std::vector<std::string>& ips, int days);
/// A new server certificate for current's key, with current's CN and subject alternative names
/// (renewal: only the certificate file changes, so replacing it is one atomic rename).
Result<std::string> reissue_server(const KeyCert& ca, const KeyCert& current, int days);
/// The notAfter of the first certificate in cert_pem, Unix seconds.
Result<std::int64_t> not_after(std::string_view cert_pem);
/// Generates a key and issues a TLS client certificate with CN = common_name.
Result<KeyCert> issue_client(const KeyCert& ca, std::string_view common_name, int days);
/// Verifies a CSR's self-signature and issues a client certificate for its public key with
/// CN = common_name (the CSR's subject must have that CN or none).
Result<std::string> sign_client_csr(const KeyCert& ca, std::string_view csr_pem, std::string_view common_name, int days);
/// SHA-256 (hex) of the DER encoding of the first certificate in cert_pem.
Result<std::string> fingerprint(std::string_view cert_pem);
/// The subject CN of the first certificate in cert_pem.
Result<std::string> common_name(std::string_view cert_pem);

}  // namespace otac::backend::pki
