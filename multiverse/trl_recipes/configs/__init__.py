"""Recipe configs: a package only so that built wheels ship the YAML files next to the code."""
