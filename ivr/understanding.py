"""The hotline's speech understanding, built once at the edge from the settings.

The dialog stays pure (CONVENTIONS 1): the street list file is read and the region checked
here, when a node, a simulated call or a script starts, and the resulting `Understander` is
handed to every call's dialog.
"""

from __future__ import annotations

from ivr.settings import Settings, SettingsError
from speech.address import UnknownRegionError
from speech.streets import StreetList, StreetListError
from speech.understand import Understander


def load_understander(settings: Settings) -> Understander:
    """Region (`service_province`, `service_city`) and street list (`service_streets`, else the
    shipped sample); SettingsError names the setting that is wrong."""
    try:
        streets = (
            StreetList.load(settings.service_streets)
            if settings.service_streets is not None
            else StreetList.shipped()
        )
    except StreetListError as exc:
        raise SettingsError(f"service_streets: {exc}") from None
    try:
        return Understander(settings.service_province, settings.service_city, streets)
    except UnknownRegionError as exc:
        raise SettingsError(f"service_province/service_city: {exc}") from None
