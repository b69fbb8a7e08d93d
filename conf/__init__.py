"""hwnas's config package (installed as ``nas.conf``); importing it registers the typed schemas."""

from nas.schema import register

register()
