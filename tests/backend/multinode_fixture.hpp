// Several otac-backend nodes on one PostgreSQL database (docs/operations.md, "Several nodes on
// PostgreSQL"): real processes sharing a throw-away cluster (tests/support/pg_cluster).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pg_cluster.hpp"
#include "pg_store.hpp"
#include "server_fixture.hpp"

namespace otac::backend::test {

/// The first node creates the data directory (CA, certificates, KEK, tokens); the others
/// start from a copy of it, as a deployment copies them to each machine. Every node gets
/// the shared settings; `node_lines(i)`, if given, adds node i's own (e.g. mo_listen).
struct Cluster {
  std::string conninfo;
  std::vector<std::unique_ptr<Backend>> nodes;

  explicit Cluster(int count, const std::string& extra = {}, const std::function<std::string(int)>& node_lines = {},
                   const std::function<void(const std::filesystem::path&)>& prepare_first = {}) {
    std::string why;
    auto* pg = otac::pgtest::PgCluster::shared(&why);
    if (!pg) FAIL("no PostgreSQL cluster: " << why);
    conninfo = pg->create_database();
    const std::string config = "store = \"postgresql\"\npostgres_conninfo = \"" + conninfo + "\"\nworker_threads = 32\n"
                               "decline_source_burst = 1000000\ndecline_card_burst = 1000000\n" + extra;
    for (int i = 0; i < count; ++i) {
      nodes.push_back(std::make_unique<Backend>());
      Backend& b = *nodes.back();
      if (i == 0 && prepare_first) {
        std::filesystem::create_directories(b.dir);
        prepare_first(b.dir);
      }
      if (i > 0) {
        std::filesystem::copy(nodes[0]->dir, b.dir, std::filesystem::copy_options::recursive);
        std::filesystem::remove(b.dir / "otac-backend.conf");  // each node writes its own
      }
      b.start(config + (node_lines ? node_lines(i) : std::string()));
    }
  }
  Backend& operator[](std::size_t i) { return *nodes[i]; }

  /// An operator's refresh of card n through node i; the new list's id.
  std::uint16_t refresh(std::size_t i, const Bytes& n) {
    auto r = Backend::call((*this)[i].admin(), boost::beast::http::verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
    REQUIRE(r.status == 200);
    return static_cast<std::uint16_t>(std::stoi(field(r.body, "list")));
  }

  /// One OTAC, read from the shared database.
  SecretBytes otac(const Bytes& n, std::uint16_t list, std::uint16_t index) {
    if (!reader_) reader_ = store();  // one connection for all the codes a test reads
    SecretBytes out;
    REQUIRE(reader_->run([&](Tx& tx) -> Result<void> {
      auto o = tx.otac(n, list, index);
      if (!o) return o.error();
      out = std::move(o->key);
      return {};
    }));
    return out;
  }

  // A store on the shared database, with the nodes' KEK (as an operator would hold it).
  std::unique_ptr<Store> store() {
    auto kek = Kek::load_or_create(nodes[0]->dir / "kek.bin");
    REQUIRE(kek);
    PgOptions o;
    o.conninfo = conninfo;
    o.start_attempts = 1;
    auto s = open_pg_store(o, std::make_shared<const Kek>(std::move(*kek)));
    REQUIRE(s);
    return std::move(*s);
  }

 private:
  std::unique_ptr<Store> reader_;
};

}  // namespace otac::backend::test
