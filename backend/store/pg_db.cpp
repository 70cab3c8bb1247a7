#include "pg_db.hpp"

#include <stdexcept>

namespace otac::backend::pg {
namespace {

// PostgreSQL type OIDs (catalog/pg_type.h) of the integer columns the store reads.
constexpr Oid kBool = 16, kInt8 = 20, kInt2 = 21, kInt4 = 23;

std::int64_t big_endian(const char* p, int len) {
  std::uint64_t v = 0;
  for (int i = 0; i < len; ++i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  if (len < 8 && len > 0 && (static_cast<std::uint8_t>(p[0]) & 0x80U) != 0) v |= ~std::uint64_t{0} << (8 * len);  // sign-extend
  return static_cast<std::int64_t>(v);
}

}  // namespace

Error Connection::error(const PGresult* r, std::string_view what) {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  last_state = state ? state : "";
  std::string message = r ? PQresultErrorMessage(r) : "";
  if (message.empty()) message = PQerrorMessage(conn_.get());
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  const Errc code = last_state == kUniqueViolation ? Errc::conflict : Errc::io;
  return make_error(code, std::string(what) + ": " + message);
}

Result<std::string> Connection::prepared(const char* sql) {
  if (auto it = names_.find(sql); it != names_.end()) return it->second;
  std::string name = "s" + std::to_string(names_.size() + 1);
  ResultPtr r(PQprepare(conn_.get(), name.c_str(), sql, 0, nullptr));
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
    auto e = error(r.get(), "cannot prepare a statement");
    if (!broken() && !last_state.empty() && last_state.rfind("42", 0) == 0)
      throw std::logic_error(e.message + " in `" + sql + "`");  // a syntax or name error: a bug, not input
    return e;
  }
  names_.emplace(sql, name);
  return name;
}

Result<void> Connection::command(const char* sql) {
  ResultPtr r(PQexec(conn_.get(), sql));
  const auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return error(r.get(), std::string("`") + sql + "` failed");
  return {};
}

std::int64_t Row::col_i(int c) const {
  if (col_null(c)) return 0;
  const char* p = PQgetvalue(r_, row_, c);
  const int len = PQgetlength(r_, row_, c);
  switch (PQftype(r_, c)) {
    case kBool: return len == 1 && p[0] != 0 ? 1 : 0;
    case kInt2: case kInt4: case kInt8: return big_endian(p, len);
    default: throw std::logic_error("column " + std::to_string(c) + " is not an integer");  // a bug in the SQL
  }
}

Bytes Row::col_b(int c) const {
  if (col_null(c)) return {};
  const auto* p = reinterpret_cast<const std::uint8_t*>(PQgetvalue(r_, row_, c));
  return Bytes(p, p + PQgetlength(r_, row_, c));
}

std::string Row::col_t(int c) const {
  if (col_null(c)) return {};
  return std::string(PQgetvalue(r_, row_, c), static_cast<std::size_t>(PQgetlength(r_, row_, c)));
}

Result<void> Query::run() {
  auto name = c_.prepared(sql_);
  if (!name) return name.error();
  std::vector<const char*> values;
  std::vector<int> lengths;
  binary_.resize(values_.size(), 0);
  for (std::size_t i = 0; i < values_.size(); ++i) {
    // libpq passes text parameters as C strings: a NUL would cut the value short without an
    // error (an id "T1\0x" stored as "T1"). Refuse it instead; SQLite keeps such text whole.
    if (values_[i] && binary_[i] == 0 && values_[i]->find('\0') != std::string::npos)
      return make_error(Errc::bad_value, "a text value holds a NUL byte (parameter " + std::to_string(i + 1) + ")");
  }
  for (const auto& v : values_) {
    values.push_back(v ? v->data() : nullptr);
    lengths.push_back(v ? static_cast<int>(v->size()) : 0);
  }
  res_.reset(PQexecPrepared(c_.get(), name->c_str(), static_cast<int>(values.size()), values.data(), lengths.data(),
                            binary_.data(), 1));
  const auto st = res_ ? PQresultStatus(res_.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) return c_.error(res_.get(), "database statement failed");
  return {};
}

int Query::changes() const {
  const char* n = res_ ? PQcmdTuples(res_.get()) : "";
  return n && *n ? std::atoi(n) : 0;
}

}  // namespace otac::backend::pg
