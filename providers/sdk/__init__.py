"""The provider SDK: ProviderBase, tool registry, egress-checked HTTP, vault access."""
