// Boost.URL's compiled part, built here: Debian's Boost 1.81 ships it header-only.
#include <boost/url/src.hpp>
