// The backend's private CA (ECDSA P-256): the CA itself, the server certificate, terminal
// client certificates (generated key, or a CSR signed), fingerprints. OpenSSL 3.
#pragma once

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

/// Creates a self-signed CA (P-256, CA:TRUE, keyCertSign|cRLSign).
Result<KeyCert> make_ca(std::string_view common_name, int days);
/// Issues a TLS server certificate with the given DNS and IP subject alternative names.
Result<KeyCert> issue_server(const KeyCert& ca, std::string_view common_name, const std::vector<std::string>& dns,
                             const std::vector<std::string>& ips, int days);
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
