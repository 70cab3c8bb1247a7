#include "otac/hw/dispenser_model.hpp"

namespace otac::hw::dispenser {

namespace d = otac::dispenser;

namespace {

d::Reply dispensed(d::Status s, std::int64_t handed) {
  d::Reply r;
  r.kind = d::Reply::Kind::dispense;
  r.status = s;
  r.handed = handed;
  return r;
}

}  // namespace

Answer Model::handle(std::string_view line) {
  auto req = d::parse_request(line);
  if (!req) return {d::encode(dispensed(d::Status::bad_request, 0)), 0};
  switch (req->kind) {
    case d::Request::Kind::status: {
      d::Reply r;
      r.kind = d::Reply::Kind::status;
      bool any = false;
      for (const auto& c : cassettes_) any = any || c.count > 0;
      r.state = any ? "ready" : "empty";
      r.cassettes = cassettes_;
      return {d::encode(r), 0};
    }
    case d::Request::Kind::fault: {
      fault_ = req->fault;
      d::Reply r;
      r.kind = d::Reply::Kind::fault;
      r.fault = req->fault;
      return {d::encode(r), 0};
    }
    case d::Request::Kind::dispense:
      return dispense(req->amount, req->take_seconds);
  }
  return {d::encode(dispensed(d::Status::bad_request, 0)), 0};
}

Answer Model::dispense(std::int64_t amount, std::uint32_t take_seconds) {
  const d::Fault fault = fault_;
  fault_ = d::Fault::none;  // a fault hits one dispense
  const auto plan = d::plan_notes(cassettes_, amount);
  if (plan.empty() || fault == d::Fault::empty) return {d::encode(dispensed(d::Status::empty, 0)), 0};
  if (fault == d::Fault::jam) return {d::encode(dispensed(d::Status::jam, 0)), 0};
  std::uint32_t notes = 0;
  for (auto n : plan) notes += n;
  if (fault == d::Fault::partial && notes >= 2) {
    // The largest note of the plan comes out, then the transport jams; the rest stays in
    // its cassette.
    std::size_t largest = 0;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      if (plan[i] > 0 && (plan[largest] == 0 || cassettes_[i].denomination > cassettes_[largest].denomination)) largest = i;
    }
    --cassettes_[largest].count;
    return {d::encode(dispensed(d::Status::partial, cassettes_[largest].denomination)), 0};
  }
  if (fault == d::Fault::partial) return {d::encode(dispensed(d::Status::jam, 0)), 0};  // one note: nothing came out
  for (std::size_t i = 0; i < plan.size(); ++i) cassettes_[i].count -= plan[i];
  if (fault == d::Fault::shutter) {
    retracted_ += amount;
    return {d::encode(dispensed(d::Status::shutter, 0)), 0};
  }
  if (fault == d::Fault::not_taken) {
    retracted_ += amount;
    return {d::encode(dispensed(d::Status::retracted, 0)), take_seconds};
  }
  return {d::encode(dispensed(d::Status::dispensed, amount)), 0};
}

}  // namespace otac::hw::dispenser
