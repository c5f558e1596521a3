# check-kconfig FRAGMENT CONFIG: every option FRAGMENT asks for ("CONFIG_X=v"
# or "# CONFIG_X is not set") must hold in CONFIG after olddefconfig /
# oldconfig: Kconfig drops an option silently when a dependency is missing.
# Shipped into every container stage as /build/engine/check-kconfig.
set -eu
fragment=$1
config=$2
grep -E '^(CONFIG_[A-Za-z0-9_]+=.*|# CONFIG_[A-Za-z0-9_]+ is not set)$' "$fragment" | while IFS= read -r want; do
    case "$want" in
        "# "*) opt=${want#\# }; opt=${opt% is not set}
               if grep -q "^$opt=" "$config"; then
                   echo "config check: $opt is set ($(grep "^$opt=" "$config")), $fragment wants it unset"; exit 1
               fi ;;
        *)     grep -qx "$want" "$config" || {
                   echo "config check: $want (from $fragment) did not survive: $(grep "^${want%%=*}=" "$config" || echo unset)"; exit 1; } ;;
    esac
done
echo "config check: every option of $fragment holds"
