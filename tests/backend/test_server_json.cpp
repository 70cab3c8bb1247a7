// Strict JSON request bodies (backend/server/json_input): every JSON value type passes the
// duplicate-key scan, duplicates are found however a key is spelled, and every field error
// names the field and what was wrong.
#include <catch2/catch.hpp>

#include <cstddef>
#include <functional>
#include <string>

#include "json_input.hpp"

using otac::backend::http::Fields;
using otac::backend::http::parse_object;

namespace {

// The first error Fields records for body when `read` reads one field (body must parse).
std::string field_error(const std::string& body, const std::function<void(Fields&)>& read) {
  auto o = parse_object(body, {"k"});
  REQUIRE(o);
  Fields f(*o);
  read(f);
  return f.error.value_or("");
}

}  // namespace

TEST_CASE("strict JSON: every value type, escaped keys and nested objects pass the duplicate scan", "[server][json]") {
  // Numbers of each kind (int64, uint64 beyond int64, double), booleans, null, escaped
  // strings and keys, arrays of objects: all accepted when no key repeats.
  auto ok = parse_object(R"({"a":1.5e3,"b":true,"c":null,"d":18446744073709551615,"e":"x\u0041y","f\u0067":[1,{"g":2,"h":false}],"i":-7})",
                         {"a", "b", "c", "d", "e", "fg", "i"});
  REQUIRE(ok);
  CHECK(ok->size() == 7);
  // A duplicate is found whether the second spelling is escaped or not, at any depth.
  auto dup = parse_object(R"({"k":1,"\u006b":2})", {"k"});
  REQUIRE_FALSE(dup);
  CHECK(dup.error().message == "duplicate field \"k\" (each field may appear once)");
  auto nested = parse_object(R"({"k":[{"x":1,"y":{"x":2}},{"x":3,"x":4}]})", {"k"});
  REQUIRE_FALSE(nested);
  CHECK(nested.error().message.find("duplicate field \"x\"") != std::string::npos);
  // Same key names in sibling objects are not duplicates.
  CHECK(parse_object(R"({"k":[{"x":1},{"x":2}]})", {"k"}));
  // Not an object, not JSON, too deep.
  CHECK(parse_object("[1]", {"k"}).error().message == "request body must be a JSON object");
  CHECK(parse_object("", {"k"}).error().message == "request body must be a JSON object");
  CHECK(parse_object("{\"k\":", {"k"}).error().message.rfind("request body is not valid JSON", 0) == 0);
  CHECK_FALSE(parse_object(R"({"k":[[[[[[[[[[1]]]]]]]]]]})", {"k"}));
  CHECK(parse_object(R"({"z":1})", {"k", "l"}).error().message == "unknown field \"z\" (allowed: k, l)");
}

// An object's keys are compared when it closes: thousands of keys (a body at the size limit)
// are checked in one sort, a repeat among them is still found, and an arena too small for
// the object (the authorization handler's stack buffer) falls back to the heap.
TEST_CASE("strict JSON: many keys, a late duplicate, and an arena smaller than the object", "[server][json]") {
  std::string inner;
  for (int i = 0; i < 5000; ++i) inner += (i ? ",\"" : "\"") + std::to_string(i) + "\":" + std::to_string(i);
  const std::string body = "{\"k\":{" + inner + "},\"l\":1}";
  alignas(std::max_align_t) unsigned char arena[256];
  boost::json::monotonic_resource mr(arena, sizeof arena);
  auto ok = parse_object(body, {"k", "l"}, &mr);
  REQUIRE(ok);
  CHECK(ok->at("k").as_object().size() == 5000);
  CHECK(ok->at("k").as_object().at("4999").as_int64() == 4999);
  auto late = parse_object("{\"k\":{" + inner + ",\"17\":0}}", {"k"});
  REQUIRE_FALSE(late);
  CHECK(late.error().message == "duplicate field \"17\" (each field may appear once)");
  // The outer object's keys are kept while an inner one is checked and dropped.
  auto outer = parse_object(R"({"a":{"b":1,"c":{"d":2}},"e":3,"a":4})", {"a", "e"});
  REQUIRE_FALSE(outer);
  CHECK(outer.error().message == "duplicate field \"a\" (each field may appear once)");
}

TEST_CASE("strict JSON: each field error names the field and the rule it broke", "[server][json]") {
  auto integer = [](Fields& f) { (void)f.integer("k", true, 0, 100); };
  CHECK(field_error(R"({"k":1.5})", integer) == "field \"k\" must be an integer from 0 to 100");
  CHECK(field_error(R"({"k":18446744073709551615})", integer) == "field \"k\" must be an integer from 0 to 100");
  CHECK(field_error(R"({"k":101})", integer) == "field \"k\" must be an integer from 0 to 100");
  CHECK(field_error(R"({"k":"7"})", integer) == "field \"k\" must be an integer from 0 to 100");
  CHECK(field_error(R"({"k":100})", integer).empty());
  CHECK(field_error(R"({"k":null})", integer) == "missing field \"k\"");

  auto hex8 = [](Fields& f) { (void)f.hexbytes("k", true, 8, 8); };
  CHECK(field_error(R"({"k":12})", hex8) == "field \"k\" must be a hex string");
  CHECK(field_error(R"({"k":"01020304050607zz"})", hex8) == "field \"k\" must be hex digits only");
  CHECK(field_error(R"({"k":"010"})", hex8) == "field \"k\" is not valid hex (odd number of digits)");
  CHECK(field_error(R"({"k":"0102"})", hex8) == "field \"k\" must be 8 bytes");
  CHECK(field_error(R"({"k":")" + std::string(40, 'a') + "\"}", hex8) == "field \"k\" is longer than 8 bytes");
  CHECK(field_error(R"({"k":"0102030405060708"})", hex8).empty());
  auto hex_range = [](Fields& f) { (void)f.hexbytes("k", false, 2, 4); };
  CHECK(field_error(R"({"k":"01"})", hex_range) == "field \"k\" must be 2 to 4 bytes");

  auto boolean = [](Fields& f) { (void)f.boolean("k", true); };
  CHECK(field_error(R"({"k":"true"})", boolean) == "field \"k\" must be true or false");
  CHECK(field_error(R"({"k":false})", boolean).empty());

  auto text = [](Fields& f) { (void)f.str("k", true, 4); };
  CHECK(field_error(R"({"k":1})", text) == "field \"k\" must be a string");
  CHECK(field_error(R"({"k":"abcde"})", text) == "field \"k\" is longer than 4 bytes");
  CHECK(field_error(R"({"k":"a\u0001"})", text) == "field \"k\" must be printable ASCII");

  auto array = [](Fields& f) { (void)f.array("k", true); };
  CHECK(field_error(R"({"k":{}})", array) == "field \"k\" must be an array");
  // Only the first error is kept.
  auto both = [](Fields& f) {
    (void)f.boolean("k", true);
    (void)f.integer("k", true, 0, 1);
  };
  CHECK(field_error(R"({"k":"x"})", both) == "field \"k\" must be true or false");
}
