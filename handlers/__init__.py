"""Files repoforge ships *into* TorchServe archives (.mar/.war). They stay thin: the logic is repoforge's runtime,
shipped in every .mar as the package `repoforge_runtime` (and pasted into a .war's single handler file), so the
stock TorchServe image runs the archives without repoforge installed."""
