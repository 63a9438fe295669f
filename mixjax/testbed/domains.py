"""Registers the testbed's domains. This list's order is DOMAINS order (file and iteration
order); no random draw depends on it, since each domain's stream key is its own."""

from mixjax.testbed import bios
from mixjax.testbed import code
from mixjax.testbed import math
from mixjax.testbed import prose
from mixjax.testbed import registry
from mixjax.testbed import web

for _module in (web, bios, math, code, prose):
  registry.register(_module.DOMAIN)
