#!/usr/bin/env bash
# Knockouts: shows that every guard carries the weight. For each guard it builds the
# suite (inventory's, or shop-harness's order or payment suite) with the test-only feature that removes exactly that guard
# (never part of a normal build), runs the test that puts the load the guard exists
# for on it, and reads what the auditor saw (the test's `KNOCKOUT` line). A knockout
# is caught when the test passes: the auditor reported a violation.
#   scripts/knockouts.sh [--json]
# One line per guard (with --json: {"guard", "scenario", "violations", "caught"}).
# Exit status 1 if any knockout went uncaught. Needs the test etcd and Postgres
# (ETCD_ENDPOINTS, DATABASE_URL), like the test suites.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0
case "${1:-}" in
  --json) json=1 ;;
  "") ;;
  *) echo "knockouts: unknown option $1 (only --json)" >&2; exit 2 ;;
esac

# package, test binary, feature (in the package's Cargo.toml) and test
# (services/inventory/tests/api/knockouts.rs, testing/harness/tests/order/knockouts.rs,
# testing/harness/tests/payment/knockouts.rs)
knockouts=(
  "inventory-service api knockout-lock knockouts::without_the_etcd_lock_mutex_unfenced_oversells"
  "inventory-service api knockout-fencing knockouts::without_the_fencing_token_a_paused_holder_oversells"
  "inventory-service api knockout-sku-strategy knockouts::without_the_skus_strategy_mixed_requests_oversell"
  "inventory-service api knockout-pg-condition knockouts::without_the_conditional_update_pg_oversells"
  "inventory-service api knockout-stm-compare knockouts::without_the_revision_compare_stm_oversells"
  "inventory-service api knockout-customer-limit knockouts::without_the_limit_one_customer_buys_past_it"
  "inventory-service api knockout-tombstone knockouts::without_the_tombstone_a_late_reserve_hangs_on_to_stock"
  "shop-harness order knockout-idempotency-key knockouts::without_the_idempotency_key_one_key_makes_many_orders"
  "shop-harness payment knockout-provider-key knockouts::without_the_provider_key_a_redelivered_payment_is_charged_twice"
  "shop-harness payment knockout-claim-lease knockouts::without_the_claim_lease_a_dead_workers_charge_is_kept_for_a_cancelled_order"
)

uncaught=0
for entry in "${knockouts[@]}"; do
  read -r package binary feature test <<<"$entry"
  log=$(mktemp)
  if cargo test -q -p "$package" --features "$feature" --test "$binary" "$test" \
    -- --exact --nocapture >"$log" 2>&1; then
    passed=1
  else
    passed=0
  fi
  line=$(grep -m1 '^KNOCKOUT ' "$log" || true)
  guard=$(sed -n 's/.* guard=\([^ ]*\) .*/\1/p' <<<"$line")
  scenario=$(sed -n 's/.* scenario="\([^"]*\)".*/\1/p' <<<"$line")
  violations=$(sed -n 's/.* violations=\([0-9]*\).*/\1/p' <<<"$line")
  guard=${guard:-${feature#knockout-}} violations=${violations:-0}
  if [ "$passed" = 1 ] && [ "$violations" -gt 0 ]; then
    caught=true
  else
    caught=false uncaught=$((uncaught + 1))
    if [ -z "$line" ]; then
      scenario="the test did not run to its audit; see below"
      tail -n 20 "$log" >&2
    fi
  fi
  if [ "$json" = 1 ]; then
    printf '{"guard":"%s","scenario":"%s","violations":%s,"caught":%s}\n' \
      "$guard" "$scenario" "$violations" "$caught"
  else
    printf '%-22s %-8s %4s violations  %s\n' "$guard" \
      "$([ "$caught" = true ] && echo caught || echo MISSED)" "$violations" "$scenario"
  fi
  rm -f "$log"
done
[ "$uncaught" = 0 ]
