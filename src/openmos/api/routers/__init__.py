"""One APIRouter per resource of the device REST API; ``openmos.api.app`` includes them."""
