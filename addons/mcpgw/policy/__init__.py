"""The gateway policy: pydantic models (`models`), YAML loading with located errors (`loader`),
secret references (`secrets`), the live store with its watcher (`store`) and Kong decK
translation (`deck`). Import from the submodules: concern modules define their settings models
beside their handlers and import `policy.base`, so this package stays import-light."""
