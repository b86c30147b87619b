"""One construct per capability: its resources, grants and cdk-nag acknowledgements together.

(Not named `constructs`: run as a script from `cdk/`, such a folder would shadow the `constructs`
library that aws-cdk-lib imports.)
"""
