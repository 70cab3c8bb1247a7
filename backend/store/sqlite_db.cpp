#include "sqlite_db.hpp"

#include <cctype>
#include <chrono>
#include <stdexcept>
#include <thread>

namespace otac::backend::sqlite {

Error db_error(sqlite3* db, std::string_view what) {
  const int code = sqlite3_extended_errcode(db);
  Errc e = (code & 0xFF) == SQLITE_CONSTRAINT ? Errc::conflict : Errc::io;
  return make_error(e, std::string(what) + ": " + sqlite3_errmsg(db));
}

namespace {

bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.'; }

// Offset of the `index`-th parameter of sql ("?", or "?N" for a numbered one), npos if none.
std::size_t parameter_offset(std::string_view sql, int index) {
  int seen = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    if (sql[i] != '?') continue;
    std::size_t j = i + 1;
    while (j < sql.size() && std::isdigit(static_cast<unsigned char>(sql[j])) != 0) ++j;
    if (j > i + 1) {  // ?N names its position
      if (std::string_view(sql.substr(i + 1, j - i - 1)) == std::to_string(index)) return i;
      continue;
    }
    if (++seen == index) return i;
  }
  return std::string_view::npos;
}

// The identifier that ends just before `end` (spaces skipped), empty if none.
std::string_view identifier_before(std::string_view sql, std::size_t end) {
  while (end > 0 && sql[end - 1] == ' ') --end;
  std::size_t begin = end;
  while (begin > 0 && ident_char(sql[begin - 1])) --begin;
  return sql.substr(begin, end - begin);
}

// For a ? inside VALUES(...): the column of the INSERT's list at the same position.
std::string_view insert_column(std::string_view sql, std::size_t at) {
  const auto values = sql.rfind("VALUES(", at);
  const auto cols = sql.find('(');
  if (values == std::string_view::npos || cols == std::string_view::npos || cols >= values) return {};
  std::size_t position = 0;
  for (std::size_t i = values + 7; i < at; ++i) position += sql[i] == ',' ? 1U : 0U;
  std::size_t begin = cols + 1;
  for (std::size_t k = 0; k < position; ++k) {
    begin = sql.find(',', begin);
    if (begin == std::string_view::npos || begin > values) return {};
    ++begin;
  }
  std::size_t end = begin;
  while (end < values && ident_char(sql[end])) ++end;
  return sql.substr(begin, end - begin);
}

}  // namespace

std::string parameter_name(std::string_view sql, int index) {
  const std::string fallback = "parameter " + std::to_string(index);
  const auto at = parameter_offset(sql, index);
  if (at == std::string_view::npos) return fallback;
  if (auto col = insert_column(sql, at); !col.empty()) return std::string(col);
  std::size_t op = at;
  while (op > 0 && sql[op - 1] == ' ') --op;
  const std::size_t after_operator = op;
  while (op > 0 && (sql[op - 1] == '=' || sql[op - 1] == '<' || sql[op - 1] == '>')) --op;
  if (op == after_operator) return fallback;  // not a comparison or an assignment
  if (auto col = identifier_before(sql, op); !col.empty()) return std::string(col);
  return fallback;
}

Query& Query::check(int rc) {
  if (rc != SQLITE_OK && !bind_error_) {
    const char* sql = sqlite3_sql(s_);
    bind_error_ = make_error(rc == SQLITE_TOOBIG ? Errc::bad_length : Errc::internal,
                             "cannot bind " + parameter_name(sql ? sql : "", n_) + ": " + sqlite3_errstr(rc));
  }
  return *this;
}

Result<bool> Query::step() {
  if (bind_error_) return *bind_error_;
  const int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_error(db_, "database statement failed");
}

Result<void> Query::exec() {
  auto r = step();
  if (!r) return r.error();
  return {};
}

Query Connection::query(const char* sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
      throw std::logic_error(std::string("bad SQL: ") + sqlite3_errmsg(db_.get()));  // a bug, not input
    it = cache_.emplace(sql, StmtPtr(s)).first;
  }
  return Query(db_.get(), it->second.get());
}

// BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a
// lock upgrade; the busy timeout waits for other processes, and we retry a bounded number
// of times beyond it.
Result<void> Connection::begin() {
  for (int attempt = 0;; ++attempt) {
    const int rc = sqlite3_exec(db_.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) return {};
    if ((rc & 0xFF) != SQLITE_BUSY || attempt >= 20) return db_error(db_.get(), "cannot start a database transaction");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace otac::backend::sqlite
