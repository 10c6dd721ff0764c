"""Providers: one package per upstream, each depending only on providers.sdk."""
